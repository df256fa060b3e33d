"""Checking values before they are written, so bad input fails before any SQL runs."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from workflow_engine.errors import PayloadTooLargeError, WorkflowEngineError

__all__ = [
    "DEFAULT_MAX_JSON_BYTES",
    "InvalidValueError",
    "check_changes",
    "json_value",
]

#: Largest JSON value one column takes (Postgres' jsonb stops at 255 MiB).
DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024

_MANAGED_FIELDS = frozenset({"id", "created_at", "updated_at", "version"})

#: ``\u0000`` in JSON text that is not itself an escaped backslash followed by ``u0000``.
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class InvalidValueError(WorkflowEngineError, ValueError):
    """A value cannot be stored: not JSON-serialisable, or not of the column's type."""


def json_value(where: str, value: Any, max_bytes: int) -> Any:
    """``value`` in JSON form (models and datetimes converted, as a JSON column returns it).

    Raises :class:`InvalidValueError` if it has no JSON form, and
    :class:`~workflow_engine.errors.PayloadTooLargeError` above ``max_bytes``.
    """
    if value is None:
        return None
    try:
        plain = to_jsonable_python(value)
        text = json.dumps(plain, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (PydanticSerializationError, TypeError, ValueError) as error:
        raise InvalidValueError(f"{where} is not JSON-serialisable: {error}") from None
    if _NUL.search(text):
        # Valid JSON, but Postgres cannot store U+0000 in jsonb: refuse it on every dialect.
        raise InvalidValueError(
            f"{where} contains a NUL character (U+0000), which cannot be stored"
        )
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLargeError(where, size, max_bytes)
    return plain


@cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    annotation = model.model_fields[name].annotation
    return TypeAdapter(Any if annotation is None else annotation)


def check_changes(
    model: type[BaseModel],
    table: sa.Table,
    changes: Mapping[str, Any],
    max_json_bytes: int,
    *,
    frozen: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Validate an update of ``model``'s row: known, settable fields of the right types.

    Returns the values to write (JSON columns in JSON form).
    """
    unknown = sorted(set(changes) - set(model.model_fields))
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {', '.join(unknown)}")
    managed = sorted(set(changes) & (_MANAGED_FIELDS | frozen))
    if managed:
        raise ValueError(f"{model.__name__} field(s) {', '.join(managed)} cannot be set")
    values: dict[str, Any] = {}
    for name, value in changes.items():
        where = f"{table.name}.{name}"
        if isinstance(table.c[name].type, sa.JSON):
            values[name] = json_value(where, value, max_json_bytes)
            continue
        try:
            values[name] = _adapter(model, name).validate_python(value)
        except ValidationError as error:
            raise InvalidValueError(f"{where}: {error.errors()[0]['msg']}") from None
        if isinstance(values[name], datetime) and values[name].tzinfo is None:
            raise InvalidValueError(f"{where}: naive datetime; pass a timezone-aware one")
    return values
