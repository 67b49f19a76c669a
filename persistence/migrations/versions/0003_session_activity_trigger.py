"""a session's updated_at follows its newest message, kept by a trigger

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

Creating a message used to be two statements in a transaction (touch the session, insert the message).
With the trigger it is the INSERT alone, one round trip, and every way a message gets written (imports,
turns, the original API) moves its session up the list the same way. GREATEST/max: an imported message
from the past never moves a session's activity back.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UP = [
    """CREATE TRIGGER messages_touch_session AFTER INSERT ON messages BEGIN
        UPDATE sessions SET updated_at = max(updated_at, new.created_at) WHERE id = new.session_id;
    END"""
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS messages_touch_session"]
POSTGRESQL_UP = [
    """CREATE FUNCTION messages_touch_session() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE sessions SET updated_at = GREATEST(updated_at, NEW.created_at) WHERE id = NEW.session_id;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER messages_touch_session AFTER INSERT ON messages
        FOR EACH ROW EXECUTE FUNCTION messages_touch_session()""",
]
POSTGRESQL_DOWN = [
    "DROP TRIGGER IF EXISTS messages_touch_session ON messages",
    "DROP FUNCTION IF EXISTS messages_touch_session()",
]


def upgrade() -> None:
    for statement in SQLITE_UP if op.get_bind().dialect.name == "sqlite" else POSTGRESQL_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else POSTGRESQL_DOWN:
        op.execute(statement)
