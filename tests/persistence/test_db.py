import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from persistence.db import AUTOCOMMIT, Database, create_db_engine, migrate
from persistence.models import ChatSession, utcnow
from persistence.services import messages
from shared import MessageRole, NotFound
from shared.contract import MessageCreate

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_db_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    """Every statement sent to the database while the test runs (BEGIN included)."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement.split()[0].upper())

    sa.event.listen(engine, "before_cursor_execute", record)
    yield sent
    sa.event.remove(engine, "before_cursor_execute", record)


def _add_session(db: Session, session_id: uuid.UUID) -> None:
    now = utcnow()
    db.execute(sa.insert(ChatSession).values(id=session_id, user_id="u", title="t", created_at=now, updated_at=now))


def _add_session_and_fail(db: Session, session_id: uuid.UUID) -> None:
    _add_session(db, session_id)
    raise RuntimeError("after the write")


def _stored(engine: sa.Engine, session_id: uuid.UUID) -> bool:
    with Session(engine) as db:
        return db.get(ChatSession, session_id) is not None


async def test_run_is_one_transaction_rolled_back_when_the_function_raises(
    engine: sa.Engine, statements: list[str]
) -> None:
    database = Database(engine, threads=2)
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    await database.run(_add_session, kept)
    assert statements[:2] == ["BEGIN", "INSERT"]
    with pytest.raises(RuntimeError):
        await database.run(_add_session_and_fail, dropped)
    assert (_stored(engine, kept), _stored(engine, dropped)) == (True, False)


async def test_run_autocommit_sends_the_statement_alone_and_it_stays_written(
    engine: sa.Engine, statements: list[str]
) -> None:
    database = Database(engine, threads=2)
    session_id = uuid.uuid4()
    with pytest.raises(RuntimeError):
        await database.run_autocommit(_add_session_and_fail, session_id)
    # No BEGIN (nor COMMIT): one round trip, which commits on its own.
    assert statements == ["INSERT"]
    assert _stored(engine, session_id)
    # The connection went back to the pool outside any transaction: the next one starts cleanly.
    await database.run(_add_session, uuid.uuid4())
    assert statements[-2:] == ["BEGIN", "INSERT"]


def test_sqlalchemys_own_autocommit_option_still_means_no_transaction(engine: sa.Engine, statements: list[str]) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("SELECT 1"))
    assert statements == ["SELECT"]


def test_a_message_refused_after_reaching_the_search_index_leaves_its_connection_able_to_write(
    engine: sa.Engine,
) -> None:
    # SQLite left such a connection in a read transaction: its next write failed at once with "database is
    # locked" whenever another connection had written in between (a 503 under concurrent use).
    with engine.connect().execution_options(**{AUTOCOMMIT: True}) as connection, Session(connection) as db:
        refused = MessageCreate(role=MessageRole.USER, content="indexed for search, then refused")
        with pytest.raises(NotFound):
            messages.create_message(db, uuid.uuid4(), refused)
        with Session(engine) as other, other.begin():
            _add_session(other, uuid.uuid4())
        session_id = uuid.uuid4()
        _add_session(db, session_id)
    assert _stored(engine, session_id)
