"""The :class:`~workflow_engine.ai.AICallLogger` port as a table: ``ai_calls``.

Topic prefixes match whole dot-separated segments, in one aggregated query: ``topic = p OR
topic LIKE 'p.%'`` on Postgres (``LIKE`` is case-sensitive there), ``GLOB 'p.*'`` on SQLite
(whose ``LIKE`` ignores case); both are prefix searches the topic index can serve.
Batch results carry deterministic ids and are inserted with ``ON CONFLICT DO NOTHING``, so a
batch recorded twice counts once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from workflow_engine.ai.logger import AICall, AICallStats, add_call_to_stats, empty_stats
from workflow_engine.clock import Clock, SystemClock
from workflow_engine.persistence.sql.dialect import ConnectionSource
from workflow_engine.persistence.sql.queries import param, params
from workflow_engine.persistence.sql.tables import ai_calls
from workflow_engine.persistence.sql.types import new_id
from workflow_engine.persistence.sql.values import DEFAULT_MAX_JSON_BYTES, json_value

__all__ = ["SqlAICallLogger", "topic_condition"]

_GLOB_SPECIAL = re.compile(r"([*?\[])")


class SqlAICallLogger:
    """AI calls in the ``ai_calls`` table of the state database."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.max_json_bytes = max_json_bytes
        self._db = ConnectionSource(engine)

    def log_call(self, call: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
        """Insert one call and return the row as written (a known ``id`` is not inserted twice)."""
        row = self._row(call)
        with self._db.statement() as conn:
            conn.execute(_insert_ignoring_duplicates(conn.dialect.name), [row])
        return row

    def log_batch_results(
        self, batch_id: str, calls: Sequence[Mapping[str, Any] | BaseModel]
    ) -> None:
        """Insert a batch's calls in one transaction, with ``batch_id`` in their metadata."""
        rows = [self._row(call, batch_id=batch_id) for call in calls]
        if not rows:
            return
        with self._db.write() as conn:
            conn.execute(_insert_ignoring_duplicates(conn.dialect.name), rows)

    def get_stats(self, topic_prefix: str) -> AICallStats:
        """Totals under ``topic_prefix`` (whole segments), per model, in one query."""
        stats = empty_stats()
        with self._db.read() as conn:
            dialect = conn.dialect.name
            if topic_prefix and not topic_prefix.endswith("."):
                # The common case (a run's or a stage's totals): one statement, built once.
                bound = params(topic=topic_prefix, pattern=_pattern(dialect, topic_prefix + "."))
                rows = conn.execute(_stats_of_topic(dialect), bound).all()
            else:
                condition = topic_condition(dialect, topic_prefix)
                query = _STATS if condition is None else _STATS.where(condition)
                rows = conn.execute(query).all()
        for model_key, calls, input_tokens, output_tokens, cost in rows:
            add_call_to_stats(
                stats,
                str(model_key),
                calls=int(calls),
                input_tokens=int(input_tokens),
                output_tokens=int(output_tokens),
                cost=float(cost),
            )
        return stats

    def is_recorded(self, batch_id: str) -> bool:
        """Whether some logged call has ``metadata.batch_id == batch_id``."""
        field = ai_calls.c.metadata["batch_id"].as_string()
        query = sa.select(ai_calls.c.id).where(field == batch_id).limit(1)
        with self._db.read() as conn:
            return conn.scalar(query) is not None

    def _row(
        self, call: Mapping[str, Any] | BaseModel, *, batch_id: str | None = None
    ) -> dict[str, Any]:
        parsed = call if isinstance(call, AICall) else _parse(call)
        metadata = dict(parsed.metadata or {})
        if batch_id is not None:
            metadata["batch_id"] = batch_id
        return {
            "id": parsed.id or new_id(),
            "created_at": self.clock.now(),
            "topic": parsed.topic,
            "call_type": parsed.call_type,
            "model_key": parsed.model_key,
            "model_id": parsed.model_id,
            "prompt": _text(parsed.prompt),
            "response": _text(parsed.response),
            "input_tokens": parsed.input_tokens,
            "output_tokens": parsed.output_tokens,
            "cost": parsed.cost,
            "metadata": json_value("AI call metadata", metadata or None, self.max_json_bytes),
        }


def topic_condition(dialect: str, prefix: str) -> sa.ColumnElement[bool] | None:
    """The ``WHERE`` condition of topics under ``prefix`` (``None``: every topic)."""
    topic = ai_calls.c.topic
    if not prefix:
        return None
    if prefix.endswith("."):
        return _starts_with(dialect, prefix)
    return sa.or_(topic == prefix, _starts_with(dialect, prefix + "."))


_STATS = sa.select(
    ai_calls.c.model_key,
    sa.func.count(),
    sa.func.coalesce(sa.func.sum(ai_calls.c.input_tokens), 0),
    sa.func.coalesce(sa.func.sum(ai_calls.c.output_tokens), 0),
    sa.func.coalesce(sa.func.sum(ai_calls.c.cost), 0.0),
).group_by(ai_calls.c.model_key)


@cache
def _stats_of_topic(dialect: str) -> sa.Select[Any]:
    """:data:`_STATS` of topic ``p_topic`` and the topics matching ``p_pattern`` under it."""
    topic = ai_calls.c.topic
    if dialect == "sqlite":
        under = topic.op("GLOB", is_comparison=True)(param("pattern"))
    else:
        under = topic.like(param("pattern"), escape="/")
    return _STATS.where(sa.or_(topic == param("topic"), under))


def _pattern(dialect: str, prefix: str) -> str:
    """The GLOB (SQLite) or LIKE pattern of every topic starting with ``prefix``."""
    if dialect == "sqlite":
        return _GLOB_SPECIAL.sub(r"[\1]", prefix) + "*"
    return re.sub(r"([/%_])", r"/\1", prefix) + "%"


def _starts_with(dialect: str, prefix: str) -> sa.ColumnElement[bool]:
    topic = ai_calls.c.topic
    if dialect == "sqlite":
        return topic.op("GLOB", is_comparison=True)(_GLOB_SPECIAL.sub(r"[\1]", prefix) + "*")
    return topic.startswith(prefix, autoescape=True)


def _insert_ignoring_duplicates(dialect: str) -> sa.Insert:
    insert = pg_insert(ai_calls) if dialect == "postgresql" else sqlite_insert(ai_calls)
    return insert.on_conflict_do_nothing(index_elements=["id"])


def _parse(call: Mapping[str, Any] | BaseModel) -> AICall:
    data = call.model_dump() if isinstance(call, BaseModel) else dict(call)
    if "topic" not in data:
        raise ValueError("An AI call needs a topic")
    defaults = {"call_type": "unknown", "model_key": "unknown", "model_id": "", "prompt": ""}
    fields = {**defaults, "response": "", **data}
    return AICall.model_validate({k: v for k, v in fields.items() if k in AICall.model_fields})


def _text(value: str) -> str:
    """Postgres text cannot hold NUL characters."""
    return value.replace("\x00", "")
