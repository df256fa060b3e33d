"""Statements on Postgres straight through psycopg, compiled once by SQLAlchemy.

On the hot path a statement's round trip over loopback is cheaper than SQLAlchemy's work
around it (an execution context, bind and result processing, result metadata built from
the cursor description): measured at about twice the round trip on a small VM. So on
Postgres, unless the engine has event listeners or echo on (tracing and query logging must
see every statement), the adapters' connections run each one-parameter-set statement from a cached
plan instead: the SQL SQLAlchemy compiled for it, its bind processors and its result
columns' processors (the same conversions, so rows come out as SQLAlchemy would give
them). Anything else (several parameter sets, ``IN`` lists that expand, text without
declared columns) goes through SQLAlchemy unchanged, and so does every error: a driver
error is handed to SQLAlchemy's handler, which translates it (``IntegrityError``...) and
invalidates the connection on a disconnect.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import psycopg
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import Float, Numeric, TypeDecorator, TypeEngine

__all__ = ["FastConnection"]

Processor = Callable[[Any], Any]
_NUMBERS = (Numeric, Float)


class FastRow(tuple[Any, ...]):
    """A result row: a tuple with attribute access by column name and ``_mapping``."""

    _names: dict[str, int]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[self._names[name]]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def _mapping(self) -> dict[str, Any]:
        return {name: self[index] for name, index in self._names.items()}


class FastResult:
    """The rows (if any) and row count of one statement, read eagerly."""

    def __init__(self, rows: list[FastRow], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> FastRow | None:
        return self._rows[0] if self._rows else None

    def all(self) -> list[FastRow]:
        return self._rows

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def __iter__(self) -> Iterator[FastRow]:
        return iter(self._rows)


@dataclass(frozen=True)
class _Plan:
    compiled: SQLCompiler
    sql: str
    binds: dict[str, Processor]
    row_type: type[FastRow] | None  # None: the statement returns no rows
    results: tuple[tuple[int, Processor], ...]  # (column index, processor) where one is needed


_seen: weakref.WeakSet[ClauseElement] = weakref.WeakSet()
_seen_lock = threading.Lock()


def _plan_reused(statement: ClauseElement, dialect: Dialect) -> _Plan | None:
    """The plan of a statement object run before; ``None`` on its first run.

    The adapters' hot statements are built once and reused; a statement built for one call
    is left to SQLAlchemy (whose cache keys on its structure), so it neither pays a compile
    here nor pushes a hot plan out of the cache.
    """
    if statement in _seen:
        return _plan(statement, dialect)
    with _seen_lock:
        _seen.add(statement)
    return None


# One cursor per driver connection, reused: making one per statement was about a tenth of
# the fast path's own cost. (A connection serves one thread at a time; a closed or discarded
# connection takes its cursor with it.)
_cursors: weakref.WeakKeyDictionary[psycopg.Connection[Any], psycopg.Cursor[Any]] = (
    weakref.WeakKeyDictionary()
)


def _cursor_of(driver: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    cursor = _cursors.get(driver)
    if cursor is None or cursor.closed:
        cursor = _cursors[driver] = driver.cursor()
    return cursor


@lru_cache(maxsize=256)
def _plan(statement: ClauseElement, dialect: Dialect) -> _Plan | None:
    compiled = statement.compile(dialect=dialect)
    if not isinstance(compiled, SQLCompiler) or "POSTCOMPILE" in compiled.string:
        return None
    columns = compiled._result_columns
    if not columns and (compiled.isplaintext or compiled.effective_returning):
        return None  # rows whose columns SQLAlchemy only learns from the cursor
    row_type: type[FastRow] | None = None
    if columns:
        names = {column.keyname: index for index, column in enumerate(columns)}
        row_type = type("Row", (FastRow,), {"_names": names, "__slots__": ()})
    if any(isinstance(column.type, _NUMBERS) and column.type.asdecimal for column in columns):
        return None  # Decimal conversion depends on the column type the cursor reports
    processors = (_result_processor(column.type, dialect) for column in columns)
    results = tuple((index, fn) for index, fn in enumerate(processors) if fn is not None)
    binds = {name: process for name, process in compiled._bind_processors.items()}
    if not all(callable(process) for process in binds.values()):
        return None  # (tuple-valued binds carry one processor per element)
    return _Plan(compiled, compiled.string, binds, row_type, results)  # type: ignore[arg-type]


def _result_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor | None:
    # psycopg returns float8 as float already; SQLAlchemy's float processor would only look
    # at the cursor's column type to decide that.
    if isinstance(type_, _NUMBERS):
        return None
    if (
        isinstance(type_, TypeDecorator)
        and type_.impl_instance._cached_result_processor(dialect, None) is None
    ):
        # the decorator's own conversion, without SQLAlchemy's wrapper around it
        return partial(type_.process_result_value, dialect=dialect)
    processor: Processor | None = type_._cached_result_processor(dialect, None)
    return processor


class FastConnection:
    """A SQLAlchemy :class:`Connection` whose ``execute`` and ``scalar`` take the fast path
    on Postgres when they can (see the module docstring); everything else is delegated."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def execute(self, statement: Any, parameters: Any = None) -> Any:
        connection = self._connection
        if (
            isinstance(parameters, Sequence)
            or not isinstance(statement, ClauseElement)
            or connection._has_events
            or connection.engine._has_events
            or connection._echo
        ):
            # (event listeners and echo, e.g. query logging or tracing, see every statement)
            return connection.execute(statement, parameters)
        plan = _plan_reused(statement, connection.dialect)
        if plan is None:
            return self._connection.execute(statement, parameters)  # type: ignore[call-overload]
        return self._run(plan, parameters or {})

    def scalar(self, statement: Any, parameters: Mapping[str, Any] | None = None) -> Any:
        return self.execute(statement, parameters).scalar()

    def _run(self, plan: _Plan, parameters: Mapping[str, Any]) -> FastResult:
        values = plan.compiled.construct_params(parameters, _check=True)
        for name, process in plan.binds.items():
            if name in values:
                values[name] = process(values[name])
        connection = self._connection
        if not connection.in_transaction():
            # As SQLAlchemy's execute does: its commit() then ends what psycopg begins here.
            connection._autobegin()
        driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
        cursor = _cursor_of(driver)
        try:
            cursor.execute(plan.sql, values)
            rows = cursor.fetchall() if plan.row_type is not None else []
            rowcount = cursor.rowcount
        except psycopg.Error as error:
            connection._handle_dbapi_exception(error, plan.sql, values, cursor, None)  # type: ignore[arg-type]
        return FastResult(self._rows(plan, rows), rowcount)

    @staticmethod
    def _rows(plan: _Plan, rows: list[tuple[Any, ...]]) -> list[FastRow]:
        row_type = plan.row_type
        if row_type is None:
            return []
        results = plan.results
        if not results:
            return [row_type(row) for row in rows]
        converted = []
        for row in rows:
            values = list(row)
            for index, process in results:
                values[index] = process(values[index])
            converted.append(row_type(values))
        return converted
