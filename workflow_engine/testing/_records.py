"""Cheap copies, builds and validated updates of the frozen records the in-memory adapters store.

A stored record is immutable except for the dicts and lists held by its JSON fields, so a copy
handed to a caller needs fresh containers only there; everything else is shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from functools import cache
from types import NoneType, UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

from workflow_engine.testing.memory_blobs import clone_stored_json

M = TypeVar("M", bound=BaseModel)

_IMMUTABLE_TYPES = (str, int, float, bool, datetime, NoneType, Enum)
_set = object.__setattr__


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


def _new_instance(cls: type[M], values: dict[str, Any], fields_set: set[str]) -> M:
    """An instance of the (extra-forbidding, private-less) record ``cls`` holding ``values``."""
    instance = cls.__new__(cls)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_fields_set__", fields_set)
    _set(instance, "__pydantic_private__", None)
    return instance


def copy_record(record: M) -> M:
    """``record`` with fresh copies of its JSON containers (the record itself if it has none)."""
    values = record.__dict__
    fresh: dict[str, Any] | None = None
    cls = type(record)
    names = _MUTABLE_FIELDS.get(cls)
    for name in mutable_fields(cls) if names is None else names:
        value = values[name]
        kind = type(value)
        if kind is dict or kind is list:
            if fresh is None:
                fresh = values.copy()
            fresh[name] = clone_stored_json(value)
    if fresh is None:
        return record
    return _new_instance(cls, fresh, set(record.__pydantic_fields_set__))


def replace_fields(record: M, changes: Mapping[str, Any]) -> M:
    """``record.model_copy(update=changes)``, without its generic overhead (no validation)."""
    values = record.__dict__.copy()
    values.update(changes)
    fields_set = set(record.__pydantic_fields_set__)
    fields_set.update(changes)
    return _new_instance(type(record), values, fields_set)


@cache
def _defaults(model: type[BaseModel]) -> tuple[tuple[str, Any, Callable[[], Any] | None], ...]:
    """``(name, default, default factory)`` of each field of ``model``."""
    specs = []
    for name, info in model.__pydantic_fields__.items():
        factory = info.default_factory
        if factory is None and info.default is PydanticUndefined:
            specs.append((name, PydanticUndefined, None))
        else:
            specs.append((name, info.default, factory))  # type: ignore[arg-type]
    return tuple(specs)


def build_record(model: type[M], values: dict[str, Any]) -> M:
    """``model(**values)`` for values already of their fields' validated types (as taken from
    another validated record, the clock or :func:`json_clone`), without validating them again.
    """
    if not field_names(model).issuperset(values):
        return model(**values)  # let pydantic report the unknown field
    full: dict[str, Any] = {}
    for name, default, factory in _defaults(model):
        if name in values:
            full[name] = values[name]
        elif factory is not None:
            full[name] = factory()
        elif default is PydanticUndefined:
            return model(**values)  # let pydantic report the missing field
        else:
            full[name] = default
    return _new_instance(model, full, set(values))


_ANY: frozenset[type] = frozenset({object})  # marks a field that takes any value as it is


class _FieldCheck:
    """Validates values for one field; values of ``exact`` types pass as they are."""

    def __init__(self, model: type[BaseModel], name: str) -> None:
        info = model.__pydantic_fields__[name]
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
    fields_set = set(record.__pydantic_fields_set__)
    fields_set.update(changes)
    return _new_instance(model, values, fields_set)
