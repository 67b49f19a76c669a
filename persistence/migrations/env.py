import os

from alembic import context
from sqlalchemy import Connection

from persistence.config import DEFAULT_DATABASE_URL
from persistence.db import create_db_engine
from persistence.models import Base, is_search_object


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        include_name=lambda name, _type, _parents: not is_search_object(name),
        # SQLite can only change a table by copying it; batch mode writes that for us.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_db_engine(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    with engine.begin() as new_connection:
        _run(new_connection)
    engine.dispose()
