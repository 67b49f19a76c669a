"""request keys: an OpenAI client's retry attaches to the answer of the request it repeats

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

An answer to an OpenAI-compatible request that carries no Idempotency-Key keeps a key of that request (a hash of
its caller, its whole conversation and its parameters, computed by the gateway). The same request sent again, as
the clients' own retries do, finds the answer by it, unique, instead of storing and paying for a second one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("request_key", sa.String(length=64), nullable=True))
    # Unique: two requests alike that arrive together store one answer; the other finds it.
    op.create_index(
        "ux_messages_request_key",
        "messages",
        ["request_key"],
        unique=True,
        postgresql_where=sa.text("request_key IS NOT NULL"),
        sqlite_where=sa.text("request_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_messages_request_key", table_name="messages")
    op.drop_column("messages", "request_key")
