"""reserved prompt tokens: a run that ends without the upstream's figures still pays for its prompt

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

An answer's record keeps, beside what its run reserves, the part of it that is the prompt's estimate. A run that
ends without the upstream's usage (cancelled, deleted, failed, or an upstream that sends none) is charged that
estimate too, not only its text: its prompt was sent, and an upstream bills it (a loop of cancelled runs with long
prompts passed any budget).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "usage_records", sa.Column("reserved_prompt_tokens", sa.BigInteger(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("usage_records", "reserved_prompt_tokens")
