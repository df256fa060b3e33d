"""A :class:`~workflow_engine.ports.BlobStore` on any fsspec filesystem (S3, GCS, Azure, ...)."""

from __future__ import annotations

import contextlib
from typing import Any

import fsspec

from workflow_engine.blobs import _json
from workflow_engine.blobs._keys import key_from_parts, key_to_parts, prefix_to_parts
from workflow_engine.errors import BlobNotFoundError
from workflow_engine.persistence.sql.values import DEFAULT_MAX_JSON_BYTES

__all__ = ["FsspecBlobStore"]


class FsspecBlobStore:
    """JSON objects under an fsspec URL, e.g. ``s3://bucket/workflows`` or ``file:///data``.

    The key layout is the :class:`~workflow_engine.blobs.FilesystemBlobStore`'s. Extra keyword
    arguments go to the filesystem (credentials, endpoint, ...). The protocol's package
    (``s3fs``, ``gcsfs``, ``adlfs``) must be installed.
    """

    def __init__(
        self, url: str, *, max_json_bytes: int = DEFAULT_MAX_JSON_BYTES, **storage_options: Any
    ) -> None:
        self.url = url
        self.max_json_bytes = max_json_bytes
        fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.fs: Any = fs
        self.root: str = str(root).rstrip("/")

    def _path(self, parts: list[str]) -> str:
        return "/".join([self.root, *parts])

    def put(self, key: str, data: Any) -> None:
        """Store ``data`` (in JSON form) under ``key``, replacing any previous value."""
        parts = key_to_parts(key)
        encoded = _json.dumps(key, data, self.max_json_bytes)
        self.fs.makedirs(self._path(parts[:-1]), exist_ok=True)
        self.fs.pipe_file(self._path(parts), encoded)

    def get(self, key: str) -> Any:
        """Return the value; raise ``BlobNotFoundError`` if the key is absent."""
        try:
            return _json.loads(self.fs.cat_file(self._path(key_to_parts(key))))
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def has(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        return bool(self.fs.isfile(self._path(key_to_parts(key))))

    def delete(self, key: str) -> None:
        """Delete the key; no error if it is absent."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key_to_parts(key)))

    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        parts = prefix_to_parts(prefix)
        if parts is None:
            return []
        start = self._path(parts)
        if not self.fs.isdir(start):
            return []
        keys = []
        root = self.fs._strip_protocol(self.root).rstrip("/")
        for path in self.fs.find(start):
            relative = self.fs._strip_protocol(path)[len(root) :].strip("/")
            key = key_from_parts(relative.split("/"))
            if key is not None and key.startswith(prefix):
                keys.append(key)
        return sorted(keys)
