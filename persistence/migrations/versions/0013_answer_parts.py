"""answer parts: which model wrote which part of an answer, and the usage ledger per model

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

An answer whose upstream failed mid-answer is finished on another model, from its saved text (issue 39). The
answer keeps its parts (``messages.answer_parts``: each part's model, offset and usage), and the ledger each
part's tokens under its own model (``usage_parts``), beside the answer's record, which budgets still count once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, on either engine.
    op.add_column("messages", sa.Column("answer_parts", JSON, nullable=True))
    op.create_table(
        "usage_parts",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("estimated_tokens", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["usage_records.message_id"],
            name=op.f("fk_usage_parts_message_id_usage_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "model", name=op.f("pk_usage_parts")),
    )


def downgrade() -> None:
    op.drop_table("usage_parts")
    # Not in a batch, as in 0004: a batch would copy the table and lose its triggers.
    op.drop_column("messages", "answer_parts")
