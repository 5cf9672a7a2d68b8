"""whose key paid for each usage record

`billed_to` is `platform` (the platform's key: counted against the team's monthly token budget)
or `own_key` (the caller's own API key or server: reported, never charged). Existing rows were
all counted against budgets, so they become `platform`. A plain column on an existing table: the
RLS policies of usage_records cover it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "usage_records",
        sa.Column("billed_to", sa.String(20), nullable=False, server_default="platform"),
    )


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("billed_to")
