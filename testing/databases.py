import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

# The PostgreSQL the tests and benchmarks use unless TEST_DATABASE_URL names another.
DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def temporary_database(base: sa.URL, prefix: str = "test") -> Iterator[str]:
    """A new, empty database on the server of ``base``, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
