"""running summary of a conversation's older turns (history windowing)

`summary` condenses the first `summary_turns` exchanges; it is rewritten when the window moves.
Plain columns on an existing table: the RLS policies of conversations cover them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("summary", sa.Text(), nullable=True))
    op.add_column(
        "conversations",
        sa.Column("summary_turns", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("summary_turns")
        batch.drop_column("summary")
