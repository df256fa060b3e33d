"""Cheap copies and validated updates of the frozen record models the in-memory adapters store.

A stored record is immutable except for the dicts and lists held by its JSON fields, so a copy
handed to a caller needs fresh containers only there; everything else is shared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from functools import cache
from types import NoneType, UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter

from workflow_engine.testing.memory_blobs import clone_stored_json

M = TypeVar("M", bound=BaseModel)

_IMMUTABLE_TYPES = (str, int, float, bool, datetime, NoneType, Enum)


def _is_immutable(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, UnionType):
        return all(_is_immutable(arg) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, _IMMUTABLE_TYPES)


def new_id() -> str:
    """A random id formatted like ``uuid.uuid4().hex`` (32 hex digits), made faster."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


@cache
def field_names(model: type[BaseModel]) -> frozenset[str]:
    """The names of ``model``'s fields."""
    return frozenset(model.__pydantic_fields__)


_MUTABLE_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}


def mutable_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that may hold a dict or a list."""
    names = _MUTABLE_FIELDS.get(model)
    if names is None:
        names = _MUTABLE_FIELDS[model] = tuple(
            name
            for name, info in model.__pydantic_fields__.items()
            if not _is_immutable(info.annotation)
        )
    return names


_set = object.__setattr__
_CONTAINERS = frozenset({dict, list})


def _with_values(record: M, values: dict[str, Any]) -> M:
    """A shallow copy of ``record`` whose field values are ``values`` (what ``__copy__`` does,
    without its generic overhead)."""
    cls = type(record)
    copied = cls.__new__(cls)
    _set(copied, "__dict__", values)
    _set(copied, "__pydantic_extra__", record.__pydantic_extra__)
    _set(copied, "__pydantic_fields_set__", set(record.__pydantic_fields_set__))
    _set(copied, "__pydantic_private__", record.__pydantic_private__)
    return copied


def copy_record(record: M) -> M:
    """``record`` with fresh copies of its JSON containers (the record itself if it has none)."""
    values = record.__dict__
    fresh: dict[str, Any] | None = None
    cls = type(record)
    names = _MUTABLE_FIELDS.get(cls)
    for name in mutable_fields(cls) if names is None else names:
        value = values[name]
        if type(value) in _CONTAINERS:
            if fresh is None:
                fresh = values.copy()
            fresh[name] = clone_stored_json(value)
    if fresh is None:
        return record
    copied = cls.__new__(cls)
    _set(copied, "__dict__", fresh)
    _set(copied, "__pydantic_extra__", record.__pydantic_extra__)
    _set(copied, "__pydantic_fields_set__", set(record.__pydantic_fields_set__))
    _set(copied, "__pydantic_private__", record.__pydantic_private__)
    return copied


def replace_fields(record: M, changes: Mapping[str, Any]) -> M:
    """``record.model_copy(update=changes)``, without its generic overhead (no validation)."""
    values = record.__dict__.copy()
    values.update(changes)
    copied = _with_values(record, values)
    copied.__pydantic_fields_set__.update(changes)
    return copied


_ANY: frozenset[type] = frozenset({object})  # marks a field that takes any value as it is


class _FieldCheck:
    """Validates values for one field; values of ``exact`` types pass as they are."""

    def __init__(self, model: type[BaseModel], name: str) -> None:
        info = model.model_fields[name]
        annotation = info.annotation
        self.adapter: TypeAdapter[Any] = TypeAdapter(
            Annotated[annotation, *info.metadata] if info.metadata else annotation
        )
        self.exact = _exact_types(annotation) if not info.metadata else frozenset()

    def validate(self, value: Any) -> Any:
        if self.exact is _ANY or type(value) in self.exact:
            return value
        return self.adapter.validate_python(value)


def _exact_types(annotation: Any) -> frozenset[type]:
    """Types whose instances pydantic would return unchanged for this annotation."""
    if annotation is Any:
        return _ANY
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    exact = set()
    for member in members or (annotation,):
        if member in (str, int, float, bool, datetime, NoneType) or (
            isinstance(member, type) and issubclass(member, Enum)
        ):
            exact.add(member)
    return frozenset(exact)


@cache
def _field_check(model: type[BaseModel], name: str) -> _FieldCheck:
    return _FieldCheck(model, name)


def validated_update(record: M, changes: Mapping[str, Any]) -> M:
    """A copy of ``record`` with ``changes`` validated field by field (names must be fields)."""
    model = type(record)
    values = record.__dict__.copy()
    for name, value in changes.items():
        values[name] = _field_check(model, name).validate(value)
    copied = _with_values(record, values)
    copied.__pydantic_fields_set__.update(changes)
    return copied
