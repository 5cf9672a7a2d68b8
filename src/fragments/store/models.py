"""SQLAlchemy 2 models: one schema for SQLite and PostgreSQL (RLS policies live in migrations)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Tier = Literal["free", "pro", "enterprise"]
# Whose key paid for a model call: the platform's (counted against the team's budget) or the
# caller's own key or server (shown in usage, never charged).
BilledTo = Literal["platform", "own_key"]
Role = Literal["owner", "admin", "member"]
MessageRole = Literal["user", "assistant"]
# What an e-mailed link does when followed.
EmailTokenPurpose = Literal["password_reset", "email_confirmation"]

# Stable constraint names: Alembic's autogenerate and SQLite's batch mode need them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    """Random, unguessable ids (never sequential: ids appear in URLs)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


def _id() -> Mapped[str]:
    return mapped_column(String(32), primary_key=True, default=new_id)


def _created() -> Mapped[datetime]:
    return mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = _id()
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_guest: Mapped[bool] = mapped_column(Boolean, default=False)
    # Supabase's `sub` for users who arrive with a Supabase token.
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # When the address was confirmed by a mailed link; None blocks sign-in only while
    # FRAGMENTS_REQUIRE_EMAIL_CONFIRMATION is on (accounts from before it count as confirmed).
    email_confirmed_at: Mapped[datetime | None] = mapped_column()
    # A platform operator (`fragments operators add EMAIL`): sees the operator page /admin.
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = _created()


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(20), default="free")
    # An enterprise team's own figures: {"monthly_tokens": n, "chat_per_day": n,
    # "sandbox_per_day": n}. Tier and limits are set by the operator (`fragments teams`).
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    personal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "team_id", name="uq_memberships_user_team"),)
    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20), default="member")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()


class AuthSession(Base):
    """One sign-in: its refresh token (hashed, rotated) and the team it acts for."""

    __tablename__ = "auth_sessions"
    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    refresh_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _created()


class EmailToken(Base):
    """A single-use link sent by e-mail (password reset, address confirmation); only the
    token's SHA-256 is stored. Read and written only by the unauthenticated recovery routes,
    so it has no RLS policy (like users and auth_sessions): those routes act as nobody."""

    __tablename__ = "email_tokens"
    __table_args__ = (Index("ix_email_tokens_email_created", "email", "created_at"),)
    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    # The address the link went to: a later change of the account's address voids the link.
    email: Mapped[str] = mapped_column(String(320))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Who asked (the peer address), for the per-address sending limit.
    requested_by: Mapped[str | None] = mapped_column(String(64), index=True)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = _created()


class ApiToken(Base):
    """A personal API token for scripts; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column()


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_user_created", "user_id", "created_at"),)
    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Running summary of the first `summary_turns` exchanges (history windowing).
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary_turns: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_seq", "conversation_id", "seq"),
        UniqueConstraint("conversation_id", "turn_id", "role", name="uq_messages_turn"),
    )
    id: Mapped[str] = _id()
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(20))
    # The wire's content parts: [{type: text|code|image, ...}]
    content: Mapped[list[Any]] = mapped_column(JSON)
    fragment_id: Mapped[str | None] = mapped_column(String(32))
    # Client-made id of the turn; re-sending a turn is idempotent on it.
    turn_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()


class FragmentRow(Base):
    __tablename__ = "fragments"
    __table_args__ = (
        UniqueConstraint("conversation_id", "version", name="uq_fragments_conversation_version"),
    )
    id: Mapped[str] = _id()
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(200), default="")
    files: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # The whole fragment as the model wrote it (commentary, dependencies, port, ...).
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Who made this version: "model"; "restore", a copy of version `restored_from`; or "user",
    # edited by hand in the code view, starting from version `restored_from` (when known).
    source: Mapped[str] = mapped_column(String(20), default="model", server_default="model")
    restored_from: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()


class WorkspaceFile(Base):
    """A data file uploaded into a conversation, written into its sandbox's working folder."""

    __tablename__ = "workspace_files"
    __table_args__ = (UniqueConstraint("conversation_id", "name", name="uq_workspace_files_name"),)
    id: Mapped[str] = _id()
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    # A sanitised file name (no folder): the code reads it by this relative path.
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[str] = mapped_column(String(100))
    # csv | tsv | json | text | excel | parquet
    kind: Mapped[str] = mapped_column(String(20))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    # The first lines (text kinds) or a short description (binary kinds), told to the model.
    preview: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class ExecutionResultRow(Base):
    __tablename__ = "execution_results"
    id: Mapped[str] = _id()
    fragment_id: Mapped[str] = mapped_column(
        ForeignKey("fragments.id", ondelete="CASCADE"), index=True
    )
    sandbox_id: Mapped[str | None] = mapped_column(String(100))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = _created()


class UsageRecord(Base):
    __tablename__ = "usage_records"
    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    billed_to: Mapped[str] = mapped_column(
        String(20), default="platform", server_default="platform"
    )
    created_at: Mapped[datetime] = _created()


class SandboxUsage(Base):
    """One sandbox run's time, tagged by team for billing: the seconds from asking for the
    sandbox to its result (acquiring, installing, starting, running), for signed-in callers."""

    __tablename__ = "sandbox_usage"
    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    template: Mapped[str] = mapped_column(String(100))
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = _created()


class ProviderKey(Base):
    """A provider API key a user saved, Fernet-encrypted; never returned in plaintext."""

    __tablename__ = "provider_keys"
    __table_args__ = (UniqueConstraint("user_id", "provider", name="uq_provider_keys_user"),)
    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(50))
    ciphertext: Mapped[str] = mapped_column(Text)
    hint: Mapped[str] = mapped_column(String(20), default="")
    created_at: Mapped[datetime] = _created()


class ShortLink(Base):
    __tablename__ = "short_links"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    sandbox_id: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = _created()
