"""Engine and migrations: built at start-up (never at import), shared by every request."""

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, Table, create_engine, event, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same for every process migrating one database.
_MIGRATION_LOCK_ID = 720_431_977

P = ParamSpec("P")
T = TypeVar("T")


def create_db_engine(url: str | URL, *, pool_size: int = 4) -> Engine:
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url)
    return create_engine(
        url,
        pool_size=pool_size,
        # Room for start-up migrations and /health/ready beside a full pool of request threads.
        max_overflow=2,
        # No pre-ping: it is a round trip on every request. After a database restart, the requests in
        # flight fail (503, which clients retry) and SQLAlchemy replaces every older connection.
        connect_args={"connect_timeout": 5},
    )


def _create_sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the sqlite3 module, decides when a transaction begins (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with "database is locked"
        # when another writer got in between; taking the write lock up front makes writers queue instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # Responses are built after the commit, from the objects the request already loaded.
    return sessionmaker(engine, expire_on_commit=False)


class Database:
    """The database as routes see it: `run` calls a service function in one transaction, in a worker thread.

    One `run` per request is the unit of work: committed when the function returns, rolled back when it
    raises. It is the only hop to the thread pool a request makes, so routes are `async def` and do the
    rest (validation, serialisation) on the event loop.
    """

    def __init__(self, sessionmaker: sessionmaker[Session], *, threads: int) -> None:
        self.sessionmaker = sessionmaker
        # As many threads as pooled connections: a thread never waits for a connection, and no more
        # threads than can do useful work contend for the GIL.
        self._limiter = anyio.CapacityLimiter(threads)

    async def run(self, function: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        # Not cancellable: a client that goes away still lets the transaction finish (or roll back) cleanly.
        call = partial(self._transaction, function, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    def _transaction(self, function: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.sessionmaker.begin() as session:
            return function(session, *args, **kwargs)


def insert_on_conflict(db: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, for the database ``db`` is bound to (both spell it alike)."""
    return postgresql.insert(table) if db.get_bind().dialect.name == "postgresql" else sqlite.insert(table)


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
