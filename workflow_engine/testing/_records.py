"""Cheap copies and validated updates of the frozen record models the in-memory adapters store.

A stored record is immutable except for the dicts and lists held by its JSON fields, so a copy
handed to a caller needs fresh containers only there; everything else is shared.
"""

from __future__ import annotations

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


@cache
def mutable_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that may hold a dict or a list."""
    return tuple(
        name for name, info in model.model_fields.items() if not _is_immutable(info.annotation)
    )


def copy_record(record: M) -> M:
    """``record`` with fresh copies of its JSON containers (the record itself if it has none)."""
    values = record.__dict__
    fresh: dict[str, Any] | None = None
    for name in mutable_fields(type(record)):
        value = values[name]
        if type(value) is dict or type(value) is list:
            if fresh is None:
                fresh = {}
            fresh[name] = clone_stored_json(value)
    if fresh is None:
        return record
    copied = record.__copy__()
    copied.__dict__.update(fresh)
    return copied


@cache
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    info = model.model_fields[name]
    if not info.metadata:
        return TypeAdapter(info.annotation)
    return TypeAdapter(Annotated[info.annotation, *info.metadata])


def validated_update(record: M, changes: Mapping[str, Any]) -> M:
    """A copy of ``record`` with ``changes`` validated field by field (names must be fields)."""
    model = type(record)
    values = {name: _field_adapter(model, name).validate_python(v) for name, v in changes.items()}
    return record.model_copy(update=values)
