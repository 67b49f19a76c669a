import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from persistence.db import alembic_config, create_db_engine, migrate
from persistence.models import Base, is_search_object
from tests.conftest import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request, tmp_path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    with fresh_postgres_database() as url:
        engine = create_db_engine(url)
        yield engine
        engine.dispose()


def test_migrations_build_the_schema_from_an_empty_database(empty_engine: sa.Engine) -> None:
    migrate(empty_engine)
    inspector = sa.inspect(empty_engine)
    assert {"sessions", "messages", "alembic_version"} <= set(inspector.get_table_names())
    indexes = {index["name"] for index in inspector.get_indexes("messages")}
    assert {"ix_messages_session_created", "ix_messages_stale"} <= indexes
    assert {"ix_sessions_user_list", "ix_sessions_list"} <= {i["name"] for i in inspector.get_indexes("sessions")}


def test_models_match_the_migrations(empty_engine: sa.Engine) -> None:
    migrate(empty_engine)
    with empty_engine.connect() as connection:
        include = {"include_name": lambda name, _type, _parents: not is_search_object(name)}
        context = MigrationContext.configure(connection, opts={"compare_type": True, **include})
        assert compare_metadata(context, Base.metadata) == []


def test_migrating_twice_is_a_no_op_and_downgrade_works(empty_engine: sa.Engine) -> None:
    migrate(empty_engine)
    migrate(empty_engine)
    with empty_engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert "messages" not in sa.inspect(empty_engine).get_table_names()
    migrate(empty_engine)
    assert "messages" in sa.inspect(empty_engine).get_table_names()


def test_stale_query_uses_the_partial_index_on_postgresql() -> None:
    with fresh_postgres_database() as url:
        engine = create_db_engine(url)
        migrate(engine)
        with engine.connect() as connection:
            connection.execute(sa.text("SET enable_seqscan = off"))
            plan = "\n".join(
                row[0]
                for row in connection.execute(
                    sa.text(
                        "EXPLAIN SELECT * FROM messages WHERE status = 'in_progress' "
                        "AND lease_expires_at < now() ORDER BY lease_expires_at LIMIT 50"
                    )
                )
            )
        engine.dispose()
    assert "ix_messages_stale" in plan


def test_options_come_and_go_without_touching_messages_or_triggers(empty_engine: sa.Engine) -> None:
    """0004 adds a column: stored messages stay, and (downgraded) the triggers of 0002/0003 still work."""
    session_id, message_id = uuid.uuid4().hex, uuid.uuid4().hex
    with empty_engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0003")
        connection.execute(
            sa.text(
                "INSERT INTO sessions (id, user_id, title, is_favorite, created_at, updated_at)"
                " VALUES (:id, 'u', 'Kept', false, '2026-01-01', '2026-01-01')"
            ),
            {"id": session_id},
        )
        message = (
            "INSERT INTO messages (id, session_id, role, content, status, attempts, version, sent_at, created_at,"
            " updated_at) VALUES (:id, :session_id, 'user', 'hello', 'complete', 0, 1, :at, :at, :at)"
        )
        connection.execute(sa.text(message), {"id": message_id, "session_id": session_id, "at": "2026-02-01"})
        command.upgrade(alembic_config(connection), "head")
        rows = connection.execute(sa.text("SELECT content, options FROM messages")).all()
        assert [tuple(row) for row in rows] == [("hello", None)]
        command.downgrade(alembic_config(connection), "0003")
        assert "options" not in {c["name"] for c in sa.inspect(connection).get_columns("messages")}
        later = {"id": uuid.uuid4().hex, "session_id": session_id, "at": "2026-03-01"}
        connection.execute(sa.text(message.replace("'hello'", "'again'")), later)
        updated = connection.execute(sa.text("SELECT updated_at FROM sessions")).scalar_one()
        assert str(updated).startswith("2026-03-01")  # 0003's trigger moved the session up
        hits = connection.execute(sa.text("SELECT count(*) FROM messages")).scalar_one()
        assert hits == 2
