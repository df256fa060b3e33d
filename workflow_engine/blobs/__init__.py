"""Blob stores for large outputs and artifacts: a local directory, or any fsspec URL.

The SQL-table store is :class:`workflow_engine.persistence.sql.SqlBlobStore`.
"""

from __future__ import annotations

from workflow_engine.blobs.filesystem import FilesystemBlobStore
from workflow_engine.blobs.fsspec_store import FsspecBlobStore

__all__ = ["FilesystemBlobStore", "FsspecBlobStore"]
