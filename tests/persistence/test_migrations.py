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
