"""tool calls and content parts: what agents' conversations hold, stored and searchable

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Assistant messages carry the calls they ask for, tool messages the call they answer and their tool's name,
user messages the content parts they were sent as (an image reference is kept, not dropped). Search finds a
message by its text and by the tools it names (``tool_names``): the full-text indexes are rebuilt over both.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
COLUMNS = ("parts", "tool_calls", "tool_call_id", "name", "tool_names")

# SQLite: the FTS5 table indexes both columns, kept by the same triggers as before (migration 0002).
SQLITE_TRIGGERS = ("messages_fts_insert", "messages_fts_update", "messages_fts_delete")


def _sqlite_index(columns: str) -> list[str]:
    # S608: ``columns`` is one of this file's two constants, never input.
    values = ", ".join(f"new.{c}" for c in columns.split(", "))
    old = ", ".join(f"old.{c}" for c in columns.split(", "))
    return [
        *(f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS),
        "DROP TABLE IF EXISTS messages_fts",
        f"CREATE VIRTUAL TABLE messages_fts USING fts5({columns}, content='messages', content_rowid='rowid', "
        "tokenize='unicode61 remove_diacritics 0')",
        f"""CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.status = 'complete' BEGIN
            INSERT INTO messages_fts(rowid, {columns}) VALUES (new.rowid, {values});
        END""",  # noqa: S608
        f"""CREATE TRIGGER messages_fts_update AFTER UPDATE OF {columns}, status ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, {columns})
                SELECT 'delete', old.rowid, {old} WHERE old.status = 'complete';
            INSERT INTO messages_fts(rowid, {columns}) SELECT new.rowid, {values} WHERE new.status = 'complete';
        END""",
        f"""CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.status = 'complete' BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, {columns}) VALUES ('delete', old.rowid, {old});
        END""",  # noqa: S608
        f"INSERT INTO messages_fts(rowid, {columns}) SELECT rowid, {columns} FROM messages "  # noqa: S608
        "WHERE status = 'complete'",
    ]


def _postgresql_index(expression: str) -> list[str]:
    return [
        "DROP INDEX IF EXISTS ix_messages_search",
        f"CREATE INDEX ix_messages_search ON messages USING gin (to_tsvector('simple', {expression})) "
        "WHERE status = 'complete'",
    ]


def upgrade() -> None:
    # Nullable, no default: adding them rewrites nothing, on either engine.
    op.add_column("messages", sa.Column("parts", JSON, nullable=True))
    op.add_column("messages", sa.Column("tool_calls", JSON, nullable=True))
    op.add_column("messages", sa.Column("tool_call_id", sa.String(length=255), nullable=True))
    op.add_column("messages", sa.Column("name", sa.String(length=128), nullable=True))
    op.add_column("messages", sa.Column("tool_names", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        statements = _sqlite_index("content, tool_names")
    else:
        statements = _postgresql_index("content || ' ' || coalesce(tool_names, '')")
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    statements = _sqlite_index("content") if sqlite else _postgresql_index("content")
    for statement in statements:
        op.execute(statement)
    # Not in a batch, as in 0004: a batch would copy the table and lose its triggers.
    for column in reversed(COLUMNS):
        op.drop_column("messages", column)
