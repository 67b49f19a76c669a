"""full-text search: PostgreSQL GIN indexes, SQLite FTS5 tables

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Only complete messages are indexed: appends to an answer being generated never touch the index.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UP = [
    # unicode61 without diacritic folding, to match PostgreSQL's 'simple' configuration.
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "content, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 0')",
    "CREATE VIRTUAL TABLE sessions_fts USING fts5("
    "title, content='sessions', content_rowid='rowid', tokenize='unicode61 remove_diacritics 0')",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.status = 'complete' BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content);
    END""",
    # One trigger, so the old entry is always removed before the new one is added.
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, status ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content)
            SELECT 'delete', old.rowid, old.content WHERE old.status = 'complete';
        INSERT INTO messages_fts(rowid, content) SELECT new.rowid, new.content WHERE new.status = 'complete';
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.status = 'complete' BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    END""",
    """CREATE TRIGGER sessions_fts_insert AFTER INSERT ON sessions BEGIN
        INSERT INTO sessions_fts(rowid, title) VALUES (new.rowid, new.title);
    END""",
    """CREATE TRIGGER sessions_fts_update AFTER UPDATE OF title ON sessions BEGIN
        INSERT INTO sessions_fts(sessions_fts, rowid, title) VALUES ('delete', old.rowid, old.title);
        INSERT INTO sessions_fts(rowid, title) VALUES (new.rowid, new.title);
    END""",
    """CREATE TRIGGER sessions_fts_delete AFTER DELETE ON sessions BEGIN
        INSERT INTO sessions_fts(sessions_fts, rowid, title) VALUES ('delete', old.rowid, old.title);
    END""",
    "INSERT INTO messages_fts(rowid, content) SELECT rowid, content FROM messages WHERE status = 'complete'",
    "INSERT INTO sessions_fts(rowid, title) SELECT rowid, title FROM sessions",
]
SQLITE_DOWN = [
    "DROP TABLE IF EXISTS messages_fts",
    "DROP TABLE IF EXISTS sessions_fts",
    *(
        f"DROP TRIGGER IF EXISTS {name}"
        for name in (
            "messages_fts_insert",
            "messages_fts_update",
            "messages_fts_delete",
            "sessions_fts_insert",
            "sessions_fts_update",
            "sessions_fts_delete",
        )
    ),
]
POSTGRESQL_UP = [
    "CREATE INDEX ix_messages_search ON messages USING gin (to_tsvector('simple', content)) WHERE status = 'complete'",
    "CREATE INDEX ix_sessions_search ON sessions USING gin (to_tsvector('simple', title))",
]
POSTGRESQL_DOWN = ["DROP INDEX IF EXISTS ix_messages_search", "DROP INDEX IF EXISTS ix_sessions_search"]


def upgrade() -> None:
    for statement in SQLITE_UP if op.get_bind().dialect.name == "sqlite" else POSTGRESQL_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else POSTGRESQL_DOWN:
        op.execute(statement)
