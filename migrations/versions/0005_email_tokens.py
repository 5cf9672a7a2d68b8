"""e-mailed links (password reset, address confirmation) and users.email_confirmed_at

`email_tokens` holds the SHA-256 of each single-use link. It has no RLS policy, like `users`
and `auth_sessions`: only the unauthenticated recovery routes touch it, and they act as nobody
(there is no caller identity to check a row against). Every existing account counts as
confirmed, so turning FRAGMENTS_REQUIRE_EMAIL_CONFIRMATION on later locks nobody out.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("email_confirmed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(sa.text("UPDATE users SET email_confirmed_at = created_at WHERE email IS NOT NULL"))
    op.create_table(
        "email_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_tokens_token_hash")),
    )
    op.create_index(
        "ix_email_tokens_email_created", "email_tokens", ["email", "created_at"], unique=False
    )
    op.create_index(op.f("ix_email_tokens_user_id"), "email_tokens", ["user_id"], unique=False)
    op.create_index(
        op.f("ix_email_tokens_requested_by"), "email_tokens", ["requested_by"], unique=False
    )


def downgrade() -> None:
    op.drop_table("email_tokens")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_confirmed_at")
