"""Cheap copies, builds and validated updates of the frozen records the in-memory adapters store.

A stored record is immutable except for the dicts and lists held by its JSON fields, so a copy
handed to a caller needs fresh containers only there; everything else is shared.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from functools import cache
from types import NoneType, UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

from workflow_engine.testing._json import FlatDict, FlatList, copy_json

M = TypeVar("M", bound=BaseModel)

_IMMUTABLE_TYPES = (str, int, float, bool, datetime, NoneType, Enum)
_set = object.__setattr__


def _is_immutable(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, UnionType):
        return all(_is_immutable(arg) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, _IMMUTABLE_TYPES)


# Ids need to be unique, not unguessable: a private generator (seeded from os.urandom, and
# again in a forked child) is much faster than uuid4 and untouched by random.seed().
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
_ID_KEEP = ~((0xF << 76) | (0xC << 60)) & ((1 << 128) - 1)
_ID_SET = (0x4 << 76) | (0x8 << 60)  # version 4, RFC 4122 variant


def new_id() -> str:
    """A random id formatted like ``uuid.uuid4().hex`` (32 hex digits)."""
    return "%032x" % (_ids.getrandbits(128) & _ID_KEEP | _ID_SET)


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


def _slot_setters() -> tuple[Callable[[Any, Any], None], ...] | None:
    """The setters of BaseModel's instance slots (faster than ``object.__setattr__``)."""
    slots = ("__dict__", "__pydantic_extra__", "__pydantic_fields_set__", "__pydantic_private__")
    descriptors = [vars(BaseModel).get(name) for name in slots]
    if not all(hasattr(descriptor, "__set__") for descriptor in descriptors):
        return None
    return tuple(descriptor.__set__ for descriptor in descriptors)  # type: ignore[union-attr]


_SETTERS = _slot_setters()
_new_object = object.__new__


def _new_instance(cls: type[M], values: dict[str, Any], fields_set: set[str]) -> M:
    """An instance of the (extra-forbidding, private-less) record ``cls`` holding ``values``."""
    instance = _new_object(cls)
    if _SETTERS is not None:
        set_dict, set_extra, set_fields_set, set_private = _SETTERS
        set_dict(instance, values)
        set_extra(instance, None)
        set_fields_set(instance, fields_set)
        set_private(instance, None)
        return instance
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_fields_set__", fields_set)
    _set(instance, "__pydantic_private__", None)
    return instance


def copy_record(record: M) -> M:
    """``record`` with fresh copies of its JSON containers (the record itself if it has none)."""
    cls = type(record)
    names = _MUTABLE_FIELDS.get(cls)
    if names is None:
        names = mutable_fields(cls)
    stored = record.__dict__
    values: dict[str, Any] | None = None
    for name in names:
        value = stored[name]
        if value is None:
            continue
        kind = type(value)
        if kind is FlatDict:
            value = dict(value)
        elif kind is FlatList:
            value = list(value)
        elif kind is dict or kind is list:
            value = copy_json(value)
        else:
            continue
        if values is None:
            values = stored.copy()
        values[name] = value
    if values is None:
        return record
    return _new_instance(cls, values, set(record.__pydantic_fields_set__))


def _fields_set_with(record: BaseModel, changes: Mapping[str, Any]) -> set[str]:
    """``record``'s fields-set plus ``changes``: the same set object when nothing is added.

    For stored rows only: the adapters never change a fields-set in place, and a record handed
    out gets a set of its own (:func:`copy_record`).
    """
    fields_set = record.__pydantic_fields_set__
    return fields_set if fields_set.issuperset(changes) else fields_set.union(changes)


def replace_fields(record: M, changes: Mapping[str, Any]) -> M:
    """``record.model_copy(update=changes)``, without its generic overhead (no validation);
    for stored rows (see :func:`_fields_set_with`)."""
    values = record.__dict__.copy()
    values.update(changes)
    return _new_instance(type(record), values, _fields_set_with(record, changes))


class _Template:
    """What building a ``model`` without validation needs: every field in definition order
    (with its default where it has a plain one), the required fields and the default factories.
    """

    def __init__(self, model: type[BaseModel]) -> None:
        self.values: dict[str, Any] = {}
        self.factories: list[tuple[str, Callable[[], Any]]] = []
        required = set()
        for name, info in model.__pydantic_fields__.items():
            self.values[name] = None if info.default is PydanticUndefined else info.default
            if info.default_factory is not None:
                self.factories.append((name, info.default_factory))  # type: ignore[arg-type]
            elif info.default is PydanticUndefined:
                required.add(name)
        self.names = frozenset(self.values)
        self.required = frozenset(required)


@cache
def _template(model: type[BaseModel]) -> _Template:
    return _Template(model)


def build_record(model: type[M], values: dict[str, Any]) -> M:
    """``model(**values)`` for values already of their fields' validated types (as taken from
    another validated record, the clock or :func:`store_json`), without validating them again.
    """
    template = _template(model)
    if not (template.names.issuperset(values) and template.required.issubset(values)):
        return model(**values)  # let pydantic report the unknown or missing field
    full = template.values.copy()
    full.update(values)  # existing keys keep their place: definition order, as pydantic has it
    for name, factory in template.factories:
        if name not in values:
            full[name] = factory()
    return _new_instance(model, full, set(values))


_ANY: frozenset[type] = frozenset({object})  # marks a field that takes any value as it is


class _FieldCheck:
    """Validates values for one field; values of ``exact`` types pass as they are."""

    def __init__(self, model: type[BaseModel], name: str) -> None:
        info = model.__pydantic_fields__[name]
        annotation: Any = info.annotation
        self.adapter: TypeAdapter[Any] = TypeAdapter(
            Annotated[annotation, *info.metadata] if info.metadata else annotation
        )
        self.exact = _exact_types(annotation) if not info.metadata else frozenset()
        self.any_json_dict = not info.metadata and _is_any_json_dict(annotation)

    def validate(self, value: Any, stored_json: bool) -> Any:
        """``value`` validated; ``stored_json``: it is a :func:`store_json` result."""
        kind = type(value)
        if self.exact is _ANY or kind in self.exact:
            return value
        if stored_json and self.any_json_dict and (kind is dict or kind is FlatDict):
            return value  # string keys and JSON values: what validation would give back
        return self.adapter.validate_python(value)


def _is_any_json_dict(annotation: Any) -> bool:
    """``dict[str, Any]``, optionally ``| None``."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    dicts = [m for m in members or (annotation,) if m is not NoneType]
    return len(dicts) == 1 and get_origin(dicts[0]) is dict and get_args(dicts[0]) == (str, Any)


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


_FIELD_CHECKS: dict[type[BaseModel], dict[str, _FieldCheck]] = {}


def _field_checks(model: type[BaseModel]) -> dict[str, _FieldCheck]:
    checks = _FIELD_CHECKS.get(model)
    if checks is None:
        checks = _FIELD_CHECKS[model] = {
            name: _FieldCheck(model, name) for name in model.__pydantic_fields__
        }
    return checks


def validated_update(
    record: M, changes: Mapping[str, Any], stored_json: frozenset[str] = frozenset()
) -> M:
    """A copy of stored ``record`` with ``changes`` validated field by field (names must be
    fields); the values of the ``stored_json`` fields come from :func:`store_json`."""
    model = type(record)
    checks = _field_checks(model)
    values = record.__dict__.copy()
    for name, value in changes.items():
        check = checks[name]
        exact = check.exact
        if exact is _ANY or type(value) in exact:  # (inlined fast path of check.validate)
            values[name] = value
        else:
            values[name] = check.validate(value, name in stored_json)
    return _new_instance(model, values, _fields_set_with(record, changes))
