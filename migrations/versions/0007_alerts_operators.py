"""platform operators (users.is_operator) and their read access to usage

An operator runs the service (the operator page /admin, `fragments operators add EMAIL`). On
PostgreSQL an operator's transaction may read every team's usage rows (usage_records,
sandbox_usage) — only when the transaction asks for it (`app.operator` = 'on', set by the
operator routes alone) AND the user it acts for is an operator in `users`. Read only: writes keep
their owner-only policies. Nothing else changes on SQLite (no RLS there).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
# Chained to whatever revision is the head when this branch is merged.
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPERATOR = (
    "current_setting('app.operator', true) = 'on' AND EXISTS (SELECT 1 FROM users u "
    "WHERE u.id = current_setting('app.user_id', true) AND u.is_operator)"
)
TABLES = ("usage_records", "sandbox_usage")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_operator", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"CREATE POLICY {table}_operator_read ON {table} FOR SELECT USING ({OPERATOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP POLICY IF EXISTS {table}_operator_read ON {table}")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("is_operator")
