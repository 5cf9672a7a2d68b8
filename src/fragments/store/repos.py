"""Repositories: every query a route makes, each scoped to the caller.

The scoping here is the rule; on PostgreSQL the RLS policies enforce the same rule again inside
the database, so a query that forgot it still cannot return another tenant's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.store.db import Identity
from fragments.store.models import (
    BilledTo,
    Conversation,
    ExecutionResultRow,
    FragmentRow,
    MessageRow,
    UsageRecord,
    utcnow,
)


def _visible(who: Identity) -> ColumnElement[bool]:
    """Own conversations, and the caller's team's shared ones."""
    return or_(
        Conversation.user_id == who.user_id,
        and_(Conversation.shared.is_(True), Conversation.team_id == who.team_id),
    )


async def visible_conversation(
    session: AsyncSession, who: Identity, conversation_id: str
) -> Conversation | None:
    rows = await session.execute(
        select(Conversation).where(Conversation.id == conversation_id, _visible(who))
    )
    return rows.scalar_one_or_none()


async def own_conversation(
    session: AsyncSession, who: Identity, conversation_id: str
) -> Conversation | None:
    """Only the owner writes: chat into it, run it, rename, share, delete."""
    rows = await session.execute(
        select(Conversation).where(
            Conversation.id == conversation_id, Conversation.user_id == who.user_id
        )
    )
    return rows.scalar_one_or_none()


async def list_conversations(
    session: AsyncSession, who: Identity, *, limit: int, offset: int
) -> list[Conversation]:
    rows = await session.execute(
        select(Conversation)
        .where(_visible(who))
        .order_by(Conversation.created_at.desc(), Conversation.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars())


async def create_conversation(
    session: AsyncSession, who: Identity, *, title: str = "", conversation_id: str | None = None
) -> Conversation:
    now = utcnow()
    row = Conversation(
        user_id=who.user_id, team_id=who.team_id, title=title[:200], created_at=now, updated_at=now
    )
    if conversation_id:
        row.id = conversation_id
    session.add(row)
    await session.flush()
    return row


async def delete_conversation(session: AsyncSession, conversation: Conversation) -> None:
    # Children go explicitly too: SQLite only cascades with foreign keys on, and RLS-filtered
    # deletes on PostgreSQL are cheaper than trusting the order of cascades.
    await session.delete(conversation)
    await session.flush()


@dataclass(frozen=True)
class SavedTurn:
    fragment_id: str
    version: int


async def turn_saved(session: AsyncSession, conversation_id: str, turn_id: str) -> str | None:
    """The fragment id of an already saved turn (re-sends are idempotent on `turn_id`)."""
    rows = await session.execute(
        select(MessageRow.fragment_id).where(
            MessageRow.conversation_id == conversation_id,
            MessageRow.turn_id == turn_id,
            MessageRow.role == "assistant",
        )
    )
    found = rows.first()
    return found[0] if found else None


async def save_turn(
    session: AsyncSession,
    conversation: Conversation,
    *,
    user_content: list[Any],
    fragment: dict[str, Any],
    turn_id: str | None = None,
    fragment_id: str | None = None,
) -> SavedTurn:
    """The user's message, the assistant's fragment (a new version) and its message."""
    if turn_id:
        existing = await turn_saved(session, conversation.id, turn_id)
        if existing:
            row = await session.get(FragmentRow, existing)
            return SavedTurn(existing, row.version if row else 0)
    seq = (
        await session.execute(
            select(func.coalesce(func.max(MessageRow.seq), 0)).where(
                MessageRow.conversation_id == conversation.id
            )
        )
    ).scalar_one()
    version = (
        await session.execute(
            select(func.coalesce(func.max(FragmentRow.version), 0)).where(
                FragmentRow.conversation_id == conversation.id
            )
        )
    ).scalar_one()
    frag = FragmentRow(
        conversation_id=conversation.id,
        version=version + 1,
        template=str(fragment.get("template", ""))[:100],
        title=str(fragment.get("title", ""))[:200],
        files=_files(fragment),
        body=fragment,
    )
    if fragment_id:
        frag.id = fragment_id
    session.add(frag)
    await session.flush()
    commentary = str(fragment.get("commentary", ""))
    session.add_all(
        [
            MessageRow(
                conversation_id=conversation.id,
                seq=seq + 1,
                role="user",
                content=user_content,
                turn_id=turn_id,
            ),
            MessageRow(
                conversation_id=conversation.id,
                seq=seq + 2,
                role="assistant",
                content=[{"type": "text", "text": commentary}] if commentary else [],
                fragment_id=frag.id,
                turn_id=turn_id,
            ),
        ]
    )
    conversation.updated_at = utcnow()
    if not conversation.title:
        conversation.title = (str(fragment.get("title", "")) or _first_text(user_content))[:200]
    await session.flush()
    return SavedTurn(frag.id, frag.version)


def _files(fragment: dict[str, Any]) -> list[Any]:
    files = fragment.get("files") or []
    if files:
        return list(files)
    if fragment.get("code"):
        return [{"file_path": fragment.get("file_path", ""), "file_content": fragment["code"]}]
    return []


def _first_text(content: list[Any]) -> str:
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            return str(part.get("text", "")).strip().splitlines()[0] if part.get("text") else ""
    return ""


async def own_fragment(
    session: AsyncSession, who: Identity, fragment_id: str
) -> tuple[FragmentRow, Conversation] | None:
    rows = await session.execute(
        select(FragmentRow, Conversation)
        .join(Conversation, Conversation.id == FragmentRow.conversation_id)
        .where(FragmentRow.id == fragment_id, Conversation.user_id == who.user_id)
    )
    found = rows.first()
    return (found[0], found[1]) if found else None


async def save_execution(
    session: AsyncSession, fragment_id: str, result: dict[str, Any], sandbox_id: str | None
) -> ExecutionResultRow:
    row = ExecutionResultRow(fragment_id=fragment_id, result=result, sandbox_id=sandbox_id)
    session.add(row)
    await session.flush()
    return row


@dataclass(frozen=True)
class ConversationContents:
    """A conversation's rows: messages in order, fragment versions in order, latest result."""

    messages: list[MessageRow]
    fragments: list[FragmentRow]
    latest_result: ExecutionResultRow | None


async def conversation_contents(
    session: AsyncSession, conversation: Conversation
) -> ConversationContents:
    """Messages in order, every fragment version, and the latest execution result."""
    messages = (
        await session.execute(
            select(MessageRow)
            .where(MessageRow.conversation_id == conversation.id)
            .order_by(MessageRow.seq)
        )
    ).scalars()
    fragments = (
        await session.execute(
            select(FragmentRow)
            .where(FragmentRow.conversation_id == conversation.id)
            .order_by(FragmentRow.version)
        )
    ).scalars()
    latest = (
        await session.execute(
            select(ExecutionResultRow)
            .join(FragmentRow, FragmentRow.id == ExecutionResultRow.fragment_id)
            .where(FragmentRow.conversation_id == conversation.id)
            .order_by(ExecutionResultRow.created_at.desc(), ExecutionResultRow.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return ConversationContents(list(messages), list(fragments), latest)


async def record_usage(
    session: AsyncSession,
    who: Identity,
    *,
    conversation_id: str | None,
    model: str,
    tokens: dict[str, int],
    cost_usd: float | None,
    billed_to: BilledTo = "platform",
) -> None:
    session.add(
        UsageRecord(
            user_id=who.user_id,
            team_id=who.team_id,
            conversation_id=conversation_id,
            model=model[:200],
            input_tokens=tokens.get("input_tokens", 0),
            output_tokens=tokens.get("output_tokens", 0),
            cache_read_tokens=tokens.get("cache_read_tokens", 0),
            cache_write_tokens=tokens.get("cache_write_tokens", 0),
            cost_usd=cost_usd,
            billed_to=billed_to,
        )
    )
    await session.flush()


async def purge_older_than(session: AsyncSession, cutoff: datetime) -> int:
    """Retention: delete conversations (and by cascade their turns) not updated since cutoff."""
    result = await session.execute(delete(Conversation).where(Conversation.updated_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


async def chat_history(
    session: AsyncSession, conversation: Conversation
) -> list[tuple[MessageRow, dict[str, Any] | None]]:
    """The conversation's messages in order, each with its fragment's body (None for none)."""
    rows = await session.execute(
        select(MessageRow, FragmentRow.body)
        .outerjoin(FragmentRow, FragmentRow.id == MessageRow.fragment_id)
        .where(MessageRow.conversation_id == conversation.id)
        .order_by(MessageRow.seq)
    )
    return [(message, body) for message, body in rows.all()]


async def save_summary(
    session: AsyncSession, conversation: Conversation, summary: str, turns: int
) -> None:
    """Store the running summary, unless a newer one (covering more turns) is already there."""
    if turns <= conversation.summary_turns:
        return
    conversation.summary = summary
    conversation.summary_turns = turns
    await session.flush()
