"""an answer keeps the options it is generated with

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21

Temperature, max_tokens and the like, as the client asked for them: whoever continues an interrupted
answer (another gateway, after a crash) continues it with the same options.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, on either engine.
    op.add_column("messages", sa.Column("options", JSON, nullable=True))


def downgrade() -> None:
    # Not in a batch: on SQLite a batch copies the table, and the copy would lose its triggers (0002, 0003).
    # SQLite drops a column itself since 3.35.
    op.drop_column("messages", "options")
