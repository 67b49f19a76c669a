"""Engine and migrations: built at start-up (never at import), shared by every request."""

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, Result, Table, create_engine, event, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same for every process migrating one database.
_MIGRATION_LOCK_ID = 720_431_977
# The execution option of connections that send no BEGIN (see _begin_by_hand).
AUTOCOMMIT = "persistence_autocommit"

P = ParamSpec("P")
T = TypeVar("T")


def create_db_engine(url: str | URL, *, pool_size: int = 4) -> Engine:
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url)
    engine = create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=pool_size,
        # Room for start-up migrations and /health/ready beside a full pool of request threads.
        max_overflow=2,
        # No pre-ping: it is a round trip on every request. After a database restart, the requests in
        # flight fail (503, which clients retry) and SQLAlchemy replaces every older connection.
        connect_args={"connect_timeout": 5},
    )
    _begin_by_hand(engine, "BEGIN")
    return engine


def _create_sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # SQLite (3.40 to 3.51 at least) leaves a connection inside a read transaction when a statement
        # fails after writing to an FTS5 table outside BEGIN: a message refused (its session missing) after
        # the search trigger ran. The connection's next write then fails at once with "database is locked"
        # if anyone wrote meanwhile, without waiting out busy_timeout. Any statement that reads ends it.
        dbapi_connection = context.connection.connection.dbapi_connection if context.connection else None
        if dbapi_connection is not None and not dbapi_connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                dbapi_connection.execute("PRAGMA data_version").close()

    # A deferred transaction that reads and then writes fails at once with "database is locked" when
    # another writer got in between; taking the write lock up front makes writers queue instead.
    _begin_by_hand(engine, "BEGIN IMMEDIATE")
    return engine


def _begin_by_hand(engine: Engine, begin: str) -> None:
    """Connections stay in the driver's autocommit mode, and SQLAlchemy's transactions send ``begin`` themselves.

    A transaction costs what it did (the driver would have sent BEGIN too, and COMMIT still goes out), while
    a connection with the AUTOCOMMIT execution option sends a statement alone: a request that is one
    statement makes one round trip, not three.
    """

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        # SQLAlchemy's own per-connection AUTOCOMMIT keeps its meaning too (CHECKPOINT, CREATE DATABASE...).
        if not options.get(AUTOCOMMIT) and options.get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql(begin)


class Database:
    """The database as routes see it: `run` calls a service function in one transaction, in a worker thread.

    One `run` per request is the unit of work: committed when the function returns, rolled back when it
    raises. It is the only hop to the thread pool a request makes, so routes are `async def` and do the
    rest (validation, serialisation) on the event loop.

    `run_autocommit` is `run` without the transaction, for a function whose one write is a single statement
    and whose reads need no common snapshot: each statement commits on its own.
    """

    def __init__(self, engine: Engine, *, threads: int) -> None:
        # Responses are built after the commit, from the objects the request already loaded.
        self._transaction = sessionmaker(engine, expire_on_commit=False)
        self._autocommit = sessionmaker(engine.execution_options(**{AUTOCOMMIT: True}), expire_on_commit=False)
        # As many threads as pooled connections: a thread never waits for a connection, and no more
        # threads than can do useful work contend for the GIL. A plain executor, not anyio's to_thread,
        # whose hop cost three times the CPU under load (docs/benchmarks.md).
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="database")

    async def run(self, function: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._in_thread(partial(_call, self._transaction, function, *args, **kwargs))

    async def run_autocommit(
        self, function: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self._in_thread(partial(_call, self._autocommit, function, *args, **kwargs))

    async def _in_thread(self, call: Callable[[], T]) -> T:
        # A request cancelled while its call is queued never starts it; one that is running finishes (or
        # rolls back) cleanly in its thread, whoever is still waiting for it.
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Wait for the calls under way, then stop the threads."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _call(
    sessions: sessionmaker[Session], function: Callable[Concatenate[Session, P], T], /, *args: Any, **kwargs: Any
) -> T:
    with sessions.begin() as session:
        return function(session, *args, **kwargs)


def as_dicts(result: Result[Any]) -> list[dict[str, Any]]:
    """A result's rows as dicts, to validate: pydantic reads a Row's columns as attributes, 4 times slower
    than a dict's items (docs/benchmarks.md)."""
    keys = result.keys()
    return [dict(zip(keys, row, strict=True)) for row in result]


def insert_on_conflict(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the dialect named (both spell it alike)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision``; safe when several processes start at once."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        command.upgrade(alembic_config(connection), revision)
