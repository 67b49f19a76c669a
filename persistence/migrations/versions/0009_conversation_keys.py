"""conversation keys: an OpenAI client's conversation found again without a session header

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

An answer to an OpenAI-compatible request that named no session keeps a key of the conversation it answered
(a hash, computed by the gateway). The client's next request resends that conversation and the answer: the
gateway finds the session by the key and continues it, instead of starting a session per request.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("conversation_key", sa.String(length=64), nullable=True))
    # Only the answers that have one are indexed: most never will.
    op.create_index(
        "ix_messages_conversation_key",
        "messages",
        ["conversation_key"],
        postgresql_where=sa.text("conversation_key IS NOT NULL"),
        sqlite_where=sa.text("conversation_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_conversation_key", table_name="messages")
    op.drop_column("messages", "conversation_key")
