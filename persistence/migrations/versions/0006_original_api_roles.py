"""the original message API: roles as its clients spelled them, and every chat's newest messages by index

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

The original message API's clients send roles as `human` and `ai` and read them back the same way, while the
rest of the API says `user` and `assistant`: the spelling a client sent is kept beside the role. Its
`GET /messages/` without a chat reads the newest messages of every chat: an index on when they were written.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, on either engine.
    op.add_column("messages", sa.Column("legacy_role", sa.String(length=16), nullable=True))
    op.create_index("ix_messages_created", "messages", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_created", table_name="messages")
    # Not in a batch, as in 0004: a batch would copy the table and lose its triggers.
    op.drop_column("messages", "legacy_role")
