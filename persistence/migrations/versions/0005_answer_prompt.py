"""an answer keeps a client's own prompt

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21

The messages an OpenAI-compatible client sent, which the session's stored history does not hold (its system
prompt, the earlier turns it kept itself): whoever continues an interrupted answer (another gateway, after a
crash) continues it from the same prompt.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.add_column("messages", sa.Column("prompt", JSON, nullable=True))


def downgrade() -> None:
    # Not in a batch, as in 0004: a batch would copy the table and lose its triggers.
    op.drop_column("messages", "prompt")
