"""An in-memory :class:`~workflow_engine.ports.BlobStore`, and the JSON cloning it relies on."""

from __future__ import annotations

import json
import threading
from typing import Any

from pydantic_core import to_jsonable_python

from workflow_engine.clock import Clock, SystemClock
from workflow_engine.errors import BlobNotFoundError

_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})


class _NotPlainJson(Exception):
    """``value`` holds something a JSON round trip would change (a model, an enum, ...)."""


def _clone_plain(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlainJson
            out[key] = item if type(item) in _PLAIN_SCALARS else _clone_plain(item)
        return out
    if kind is list or kind is tuple:
        return [item if type(item) in _PLAIN_SCALARS else _clone_plain(item) for item in value]
    if kind in _PLAIN_SCALARS:
        return value
    raise _NotPlainJson


def json_clone(value: Any) -> Any:
    """Return a deep copy of ``value`` as it would come back from a JSON column.

    Models and datetimes become their JSON form, tuples become lists; the result shares no
    mutable container with ``value``.
    """
    try:  # fast path: plain dicts, lists and scalars copy as they are
        return _clone_plain(value)
    except (_NotPlainJson, RecursionError):
        return json.loads(json.dumps(to_jsonable_python(value)))


class InMemoryBlobStore:
    """A dict of JSON values: ``put`` and ``get`` clone, so nobody shares stored state."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._blobs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: Any) -> None:
        """Store a JSON copy of ``data`` under ``key`` (replacing any previous value)."""
        cloned = json_clone(data)
        with self._lock:
            self._blobs[key] = cloned

    def get(self, key: str) -> Any:
        """Return a copy of the value; raise ``BlobNotFoundError`` if the key is absent."""
        with self._lock:
            if key not in self._blobs:
                raise BlobNotFoundError(key)
            stored = self._blobs[key]
        return json_clone(stored)

    def has(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        with self._lock:
            return key in self._blobs

    def delete(self, key: str) -> None:
        """Delete the key; no error if it is absent."""
        with self._lock:
            self._blobs.pop(key, None)

    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        with self._lock:
            return sorted(key for key in self._blobs if key.startswith(prefix))

    def clear(self) -> None:
        """Delete every blob (test helper)."""
        with self._lock:
            self._blobs.clear()

    @property
    def size(self) -> int:
        """How many keys are stored."""
        with self._lock:
            return len(self._blobs)
