"""sandbox time per team (sandbox_usage)

One row per sandbox run of a signed-in caller: its user, team, template and the seconds from
asking for the sandbox to its result. Row-level security as for usage_records: a row is read by
its user or by sessions acting for its team, and written by its user only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
# Chained to whatever revision is the head when this branch is merged.
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ME = "current_setting('app.user_id', true)"
MY_TEAM = "current_setting('app.team_id', true)"
READ = f"user_id = {ME} OR team_id = {MY_TEAM}"
WRITE = f"user_id = {ME}"


def upgrade() -> None:
    op.create_table(
        "sandbox_usage",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_sandbox_usage_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_sandbox_usage_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_usage")),
    )
    with op.batch_alter_table("sandbox_usage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sandbox_usage_team_id"), ["team_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sandbox_usage_user_id"), ["user_id"], unique=False)
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE sandbox_usage ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE sandbox_usage FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY sandbox_usage_read ON sandbox_usage FOR SELECT USING ({READ})")
    op.execute(
        f"CREATE POLICY sandbox_usage_insert ON sandbox_usage FOR INSERT WITH CHECK ({WRITE})"
    )
    op.execute(
        f"CREATE POLICY sandbox_usage_update ON sandbox_usage FOR UPDATE USING ({WRITE}) "
        f"WITH CHECK ({WRITE})"
    )
    op.execute(f"CREATE POLICY sandbox_usage_delete ON sandbox_usage FOR DELETE USING ({WRITE})")


def downgrade() -> None:
    op.drop_table("sandbox_usage")
