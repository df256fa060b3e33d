"""A :class:`~workflow_engine.ports.BlobStore` in a local directory: one JSON file per key."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from workflow_engine.blobs import _json
from workflow_engine.blobs._keys import key_from_parts, key_to_parts, prefix_to_parts
from workflow_engine.errors import BlobNotFoundError
from workflow_engine.persistence.sql.values import DEFAULT_MAX_JSON_BYTES

__all__ = ["FilesystemBlobStore"]


class FilesystemBlobStore:
    """JSON files under ``root`` (created if missing), laid out like the keys.

    Writes are atomic (a temporary file renamed over the target), so a reader never sees a
    half-written value, and several processes may share the directory.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    ) -> None:
        self.root = Path(root).resolve()
        self.max_json_bytes = max_json_bytes
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key_to_parts(key))

    def put(self, key: str, data: Any) -> None:
        """Store ``data`` (in JSON form) under ``key``, replacing any previous value."""
        path = self._path(key)
        encoded = _json.dumps(key, data, self.max_json_bytes)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_bytes(encoded)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def get(self, key: str) -> Any:
        """Return the value; raise ``BlobNotFoundError`` if the key is absent."""
        try:
            return _json.loads(self._path(key).read_bytes())
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def has(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Delete the key (and directories it leaves empty); no error if it is absent."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:  # not empty (or a concurrent put just used it): stop
                break
            parent = parent.parent

    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        parts = prefix_to_parts(prefix)
        if parts is None:
            return []
        start = self.root.joinpath(*parts)
        keys = []
        for directory, _, files in os.walk(start):
            relative = Path(directory).relative_to(self.root).parts
            for name in files:
                key = key_from_parts([*relative, name])
                if key is not None and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)
