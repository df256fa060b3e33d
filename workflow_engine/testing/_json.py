"""JSON values as the in-memory adapters store them, and the copies they hand out.

A stored value is in JSON form (dicts with string keys, lists, strings, numbers, booleans,
``None``) and is never mutated. Containers holding no container are stored as
:class:`FlatDict` / :class:`FlatList`, so copying one is a single C-level ``dict()``/``list()``
call; these marker types never leave the adapters (:func:`copy_json` returns plain ones).
"""

from __future__ import annotations

from typing import Any

from workflow_engine.testing.memory_blobs import json_clone

_SCALARS = frozenset({str, int, float, bool, type(None)})


class FlatDict(dict[str, Any]):
    """A stored dict none of whose values is a container."""

    __slots__ = ()


class FlatList(list[Any]):
    """A stored list none of whose items is a container."""

    __slots__ = ()


class _NotPlain(Exception):
    pass


def _store_plain(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        out: dict[str, Any] = FlatDict()
        flat = True
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            if type(item) in _SCALARS:
                out[key] = item
            else:
                out[key] = _store_plain(item)
                flat = False
        return out if flat else dict(out)
    if kind is list or kind is tuple:
        items = [item if type(item) in _SCALARS else _store_plain(item) for item in value]
        for item in items:
            if type(item) not in _SCALARS:
                return items
        return FlatList(items)
    if kind in _SCALARS:
        return value
    raise _NotPlain


def store_json(value: Any) -> Any:
    """A deep copy of ``value`` in stored form (what :func:`json_clone` returns, marked)."""
    try:
        return _store_plain(value)
    except (_NotPlain, RecursionError):
        return _store_plain(json_clone(value))


def copy_json(value: Any) -> Any:
    """A copy of a stored value with fresh plain dicts and lists and the same scalars."""
    kind = type(value)
    if kind is FlatDict:
        return dict(value)
    if kind is FlatList:
        return list(value)
    if kind is dict:
        out = value.copy()
        for key, item in value.items():
            kind = type(item)
            if kind is FlatDict:
                out[key] = dict(item)
            elif kind is dict or kind is list or kind is FlatList:
                out[key] = copy_json(item)
        return out
    if kind is list:
        return [item if type(item) in _SCALARS else copy_json(item) for item in value]
    return value
