"""Engines for the two supported databases, and how each one opens a transaction.

Postgres needs nothing special. Write paths that are one statement run in autocommit (one
round trip: psycopg sends ``BEGIN`` as a separate command otherwise); the claim and dequeue
statements lock with ``FOR UPDATE SKIP LOCKED``. Behind PgBouncer (transaction pooling) the
adapters keep no session state: advisory locks are transaction-level only, and psycopg's
server-side prepared statements can be turned off with ``prepare_threshold=None``.

SQLite has no row locks, so a writer must own the database before it reads what it is about
to change. Every transaction the adapters (and anyone else on a configured engine) open is
``BEGIN IMMEDIATE``, which takes the write lock at once: a select-then-update inside it can
never race another writer, and two writers queue on the busy timeout instead of failing with
``SQLITE_BUSY`` half-way. Read-only work asks for a deferred ``BEGIN`` instead
(:data:`READ_OPTIONS`), which in WAL mode neither waits for nor blocks the writer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from workflow_engine.persistence.sql.fast import FastConnection

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "BUSY_TIMEOUT_S",
    "ConnectionSource",
    "Transaction",
    "configure_engine",
    "create_engine",
    "create_postgres_engine",
    "create_sqlite_engine",
    "current_transaction",
    "is_postgres",
    "join_transaction",
    "pinned_connection",
    "same_database",
    "transaction",
]

#: How long a SQLite writer waits for the write lock before giving up.
BUSY_TIMEOUT_S = 30.0

_BEGIN_OPTION = "workflow_engine_sqlite_begin"
_CONFIGURED_KEY = "workflow_engine_sqlite_configured"

#: Execution options of a read-only connection, per dialect.
READ_OPTIONS: dict[str, dict[str, Any]] = {
    "postgresql": {"isolation_level": "AUTOCOMMIT"},
    "sqlite": {_BEGIN_OPTION: "BEGIN"},
}


def is_postgres(engine: Engine | Connection) -> bool:
    """Whether ``engine`` talks to Postgres (otherwise it is SQLite)."""
    return engine.dialect.name == "postgresql"


def _sqlite_pragmas(dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # The busy timeout first, so that switching to WAL waits for a concurrent opener.
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() not in ("wal", "memory"):
            cursor.execute("PRAGMA journal_mode = WAL")
        # FULL, not WAL's popular NORMAL: a commit must survive a power cut too (durability
        # is the point of the engine); it costs one fsync per commit.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")  # per connection; cascades need it
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    """Emit our own BEGIN (sqlite3's implicit one cannot say IMMEDIATE)."""
    fairy = conn.connection
    dbapi_connection = fairy.dbapi_connection
    if not fairy.info.get(_CONFIGURED_KEY):
        # Done here rather than on "connect" so that connections pooled before the engine
        # was configured are set up too.
        dbapi_connection.isolation_level = None  # type: ignore[union-attr]
        _sqlite_pragmas(dbapi_connection)
        fairy.info[_CONFIGURED_KEY] = True
    statement = conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN IMMEDIATE")
    conn.exec_driver_sql(statement)


def configure_engine(engine: Engine) -> Engine:
    """Prepare a user-made engine for the adapters (idempotent); return it.

    SQLite: WAL, a busy timeout, foreign keys, and ``BEGIN IMMEDIATE`` transactions.
    Postgres: nothing. Other databases are refused.
    """
    name = engine.dialect.name
    if name == "sqlite":
        if not event.contains(engine, "begin", _sqlite_on_begin):
            event.listen(engine, "begin", _sqlite_on_begin)
    elif name != "postgresql":
        raise ValueError(f"unsupported database {name!r}: use Postgres or SQLite")
    return engine


def create_sqlite_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine on a SQLite file, configured by :func:`configure_engine`.

    In-memory databases are not supported: the adapters read on a second connection while a
    transaction is open, and each ``:memory:`` connection is its own database.
    """
    connect_args = {"timeout": BUSY_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    return configure_engine(sa.create_engine(url, connect_args=connect_args, **kwargs))


def create_postgres_engine(
    url: str | URL,
    *,
    prepare_threshold: int | None = 5,
    pool_pre_ping: bool = True,
    **kwargs: Any,
) -> Engine:
    """An engine on Postgres through psycopg 3.

    ``prepare_threshold``: after how many runs psycopg prepares a statement server-side;
    ``None`` never does (needed behind PgBouncer < 1.21 in transaction mode).
    ``pool_pre_ping`` checks each pooled connection before use, so a restarted server costs
    no failed command. Other keyword arguments go to :func:`sqlalchemy.create_engine`
    (``pool_size``, ``max_overflow``, ``pool_recycle``, ...).
    """
    url = _psycopg_url(make_url(url))
    connect_args = {"prepare_threshold": prepare_threshold, **kwargs.pop("connect_args", {})}
    engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=pool_pre_ping, **kwargs)
    return configure_engine(engine)


def create_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for a ``postgresql://`` or ``sqlite:///`` URL, ready for the adapters."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return create_sqlite_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "postgresql":
        return create_postgres_engine(parsed, **kwargs)
    raise ValueError(f"unsupported database URL {parsed!r}: use postgresql:// or sqlite:///")


def _psycopg_url(url: URL) -> URL:
    """``postgresql://`` means psycopg 3 here (psycopg2 is not a dependency)."""
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    return url


def same_database(a: Engine, b: Engine) -> bool:
    """Whether two engines reach the same database (so one transaction can span both)."""
    return a is b or _database_key(a) == _database_key(b)


@dataclass
class Transaction:
    """An open write transaction and what to run once it commits."""

    connection: Connection
    callbacks: list[Callable[[], object]] = field(default_factory=list)

    def run_callbacks(self) -> None:
        """Run every callback; re-raise the first failure once all have run."""
        first_error: Exception | None = None
        for callback in self.callbacks:
            try:
                callback()
            except Exception as error:
                first_error = first_error or error
        if first_error is not None:
            raise first_error


_local = threading.local()


def _database_key(engine: Engine) -> tuple[Any, ...]:
    url = engine.url
    return (url.get_backend_name(), url.host, url.port, url.database)


def _active() -> dict[tuple[Any, ...], Transaction]:
    active: dict[tuple[Any, ...], Transaction] | None = getattr(_local, "active", None)
    if active is None:
        active = _local.active = {}
    return active


def _pinned() -> dict[tuple[Any, ...], Connection]:
    pinned: dict[tuple[Any, ...], Connection] | None = getattr(_local, "pinned", None)
    if pinned is None:
        pinned = _local.pinned = {}
    return pinned


@contextmanager
def pinned_connection(engine: Engine) -> Iterator[None]:
    """Within the block, this thread's transactions and single statements on ``engine``'s
    Postgres database reuse one pooled connection (a no-op on SQLite, and when already pinned).

    A worker pins one around each job: one pool checkout (and pre-ping) for the job's three
    transactions instead of one per transaction, which is a round trip per transaction saved.
    """
    key = _database_key(engine)
    pinned = _pinned()
    if not is_postgres(engine) or key in pinned:
        yield
        return
    with engine.connect() as conn:
        pinned[key] = conn
        try:
            yield
        finally:
            del pinned[key]


@contextmanager
def _connection(engine: Engine, *, autocommit: bool) -> Iterator[Connection]:
    """The pinned connection (autocommit only for the block), else a new pooled one."""
    conn = _pinned().get(_database_key(engine))
    if conn is None:
        with engine.connect() as fresh:
            yield fresh.execution_options(isolation_level="AUTOCOMMIT") if autocommit else fresh
        return
    if not autocommit:
        yield conn
        return
    # psycopg's own switch: SQLAlchemy's isolation_level option costs about a third of a
    # short read's CPU here, and this connection never leaves the block in another mode.
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    driver.autocommit = True
    try:
        yield conn
    finally:
        conn.commit()  # ends the autobegun block (nothing to send in autocommit mode)
        if not driver.closed:
            driver.autocommit = False


def current_transaction(engine: Engine) -> Transaction | None:
    """This thread's open transaction on ``engine``'s database, if any."""
    return _active().get(_database_key(engine))


@contextmanager
def transaction(engine: Engine) -> Iterator[Transaction]:
    """Open a write transaction, or join this thread's open one on the same database.

    Joining is per thread and per database, so anything the thread does on that database
    while the transaction is open is part of it: it sees its own writes, and on SQLite a
    second connection never waits for a write lock its own thread holds. The outermost block
    commits, then runs the ``after_commit`` callbacks; an exception rolls back and drops them.
    """
    current = current_transaction(engine)
    if current is not None:
        yield current
        return
    key = _database_key(engine)
    with _connection(engine, autocommit=False) as conn, conn.begin():
        tx = Transaction(conn)
        _active()[key] = tx
        try:
            yield tx
        finally:
            del _active()[key]
    tx.run_callbacks()


@contextmanager
def join_transaction(engine: Engine, connection: Connection) -> Iterator[Transaction]:
    """Make ``connection``, in a transaction someone else owns, this thread's transaction on
    ``engine``'s database for the block.

    The adapters then write and read on ``connection`` and never commit or roll it back; the
    ``after_commit`` callbacks collect on the yielded :class:`Transaction`, for the owner to
    run once its transaction commits. Raises ``ValueError`` if ``connection`` is on another
    database, or if this thread already has another open transaction on it.
    """
    if not same_database(engine, connection.engine):
        raise ValueError(
            f"cannot join a transaction on {connection.engine.url!r}: the engine's tables live "
            f"in {engine.url!r}"
        )
    key = _database_key(engine)
    current = _active().get(key)
    if current is not None:
        if current.connection is not connection:
            raise ValueError("this thread already has another transaction open on the database")
        yield current
        return
    tx = Transaction(connection)
    _active()[key] = tx
    try:
        yield tx
    finally:
        del _active()[key]


class ConnectionSource:
    """Hands out connections: this thread's open transaction's, else a short-lived one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = configure_engine(engine)
        self.postgres = is_postgres(engine)
        self._read_options = READ_OPTIONS[engine.dialect.name]

    def joined(self) -> Connection | None:
        """The connection of this thread's open transaction on the database, if any."""
        tx = current_transaction(self.engine)
        return tx.connection if tx is not None else None

    def _fast(self, conn: Connection) -> Connection:
        """On Postgres, ``conn`` running statements through psycopg directly (see ``fast``)."""
        return cast(Connection, FastConnection(conn)) if self.postgres else conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed on exit (or the joined one)."""
        with transaction(self.engine) as tx:
            yield self._fast(tx.connection)

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A connection for one writing statement: autocommit on Postgres (one round trip)."""
        with self._outside_transaction(write=True) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading: never takes SQLite's write lock."""
        with self._outside_transaction(write=False) as conn:
            yield conn

    @contextmanager
    def _outside_transaction(self, *, write: bool) -> Iterator[Connection]:
        """The joined transaction's connection; else Postgres in autocommit, or SQLite in a
        write (``BEGIN IMMEDIATE``) or read (deferred) transaction."""
        joined = self.joined()
        if joined is not None:
            yield self._fast(joined)
        elif self.postgres:
            with _connection(self.engine, autocommit=True) as conn:
                yield self._fast(conn)
        elif write:
            with self.engine.begin() as conn:
                yield conn
        else:
            with self.engine.connect() as conn:
                yield conn.execution_options(**self._read_options)
