"""the Responses API: what a response was asked with, beside its answer

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

An answer created through the gateway's Responses API keeps what its client asked for that the chat model is
not sent (background, store, instructions, metadata, previous_response_id, the tools as given...), so that any
gateway, at any time, renders the response object and its events the same way.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.add_column("messages", sa.Column("response", JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "response")
