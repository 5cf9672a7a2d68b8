"""workspace: data files uploaded into a conversation; where a fragment version came from

`workspace_files` holds the files a user uploads into a conversation (CSV, JSON, Excel, ...),
written into its sandbox's working folder on every run. `fragments.source` says who made a
version ("model", or "restore" for an old version made current again) and
`fragments.restored_from` which version a restore copied. Row-level security as for fragments:
a file is read with its conversation and written by the conversation's owner only.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
# Chained to whatever revision is the head when this branch is merged.
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ME = "current_setting('app.user_id', true)"
READ = "conversation_id IN (SELECT id FROM conversations)"
WRITE = f"EXISTS (SELECT 1 FROM conversations c WHERE c.id = conversation_id AND c.user_id = {ME})"


def upgrade() -> None:
    with op.batch_alter_table("fragments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=20), nullable=False, server_default="model")
        )
        batch_op.add_column(sa.Column("restored_from", sa.Integer(), nullable=True))
    op.create_table(
        "workspace_files",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("preview", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_workspace_files_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_files")),
        sa.UniqueConstraint("conversation_id", "name", name="uq_workspace_files_name"),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE workspace_files ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE workspace_files FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY workspace_files_read ON workspace_files FOR SELECT USING ({READ})")
    op.execute(
        f"CREATE POLICY workspace_files_insert ON workspace_files FOR INSERT WITH CHECK ({WRITE})"
    )
    op.execute(
        f"CREATE POLICY workspace_files_update ON workspace_files FOR UPDATE USING ({WRITE}) "
        f"WITH CHECK ({WRITE})"
    )
    op.execute(
        f"CREATE POLICY workspace_files_delete ON workspace_files FOR DELETE USING ({WRITE})"
    )


def downgrade() -> None:
    op.drop_table("workspace_files")
    with op.batch_alter_table("fragments", schema=None) as batch_op:
        batch_op.drop_column("restored_from")
        batch_op.drop_column("source")
