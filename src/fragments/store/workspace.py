"""Repositories of the workspace features: fragment versions (list, undo, restore) and the data
files uploaded into a conversation. Every function takes a conversation the caller was already
authorised for (`repos.own_conversation` / `repos.visible_conversation`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from fragments.store import repos
from fragments.store.models import Conversation, FragmentRow, MessageRow, WorkspaceFile, utcnow


@dataclass(frozen=True)
class Versions:
    """Every fragment version in order, which ones the chat still shows, and the current one."""

    rows: list[FragmentRow]
    in_chat: frozenset[str]
    current: str | None


async def versions(session: AsyncSession, conversation: Conversation) -> Versions:
    rows = (
        await session.execute(
            select(FragmentRow)
            .where(FragmentRow.conversation_id == conversation.id)
            .order_by(FragmentRow.version)
        )
    ).scalars()
    shown = (
        await session.execute(
            select(MessageRow.fragment_id)
            .where(
                MessageRow.conversation_id == conversation.id,
                MessageRow.fragment_id.is_not(None),
            )
            .order_by(MessageRow.seq)
        )
    ).scalars()
    ids = [i for i in shown if i]
    return Versions(list(rows), frozenset(ids), ids[-1] if ids else None)


async def version(
    session: AsyncSession, conversation: Conversation, fragment_id: str
) -> FragmentRow | None:
    rows = await session.execute(
        select(FragmentRow).where(
            FragmentRow.id == fragment_id, FragmentRow.conversation_id == conversation.id
        )
    )
    return rows.scalar_one_or_none()


async def last_exchange(session: AsyncSession, conversation: Conversation) -> list[MessageRow]:
    """The last exchange's messages: the last answer and the user message it answers (or a
    last user message left unanswered); empty for an empty conversation."""
    rows = list(
        (
            await session.execute(
                select(MessageRow)
                .where(MessageRow.conversation_id == conversation.id)
                .order_by(MessageRow.seq.desc())
                .limit(2)
            )
        ).scalars()
    )
    if not rows:
        return []
    if rows[0].role == "assistant" and len(rows) > 1 and rows[1].role == "user":
        return rows
    return rows[:1]


async def drop_messages(
    session: AsyncSession, conversation: Conversation, messages: list[MessageRow]
) -> None:
    """Remove messages from the chat (their fragment versions stay, listed as undone); a
    summary that covered the dropped exchange is forgotten, so it is made again."""
    for message in messages:
        await session.delete(message)
    await session.flush()
    left = (
        await session.execute(
            select(func.count())
            .select_from(MessageRow)
            .where(MessageRow.conversation_id == conversation.id, MessageRow.role == "user")
        )
    ).scalar_one()
    if conversation.summary_turns and conversation.summary_turns >= int(left):
        conversation.summary = None
        conversation.summary_turns = 0
    conversation.updated_at = utcnow()
    await session.flush()


async def restore(
    session: AsyncSession, conversation: Conversation, old: FragmentRow, *, note: str
) -> tuple[repos.SavedTurn, FragmentRow]:
    """Make `old` current as a new version: an exchange whose user message is `note` and whose
    answer is a copy of `old` (marked as a restore of it). Nothing is overwritten."""
    body: dict[str, Any] = dict(old.body)
    saved = await repos.save_turn(
        session, conversation, user_content=[{"type": "text", "text": note}], fragment=body
    )
    row = await session.get(FragmentRow, saved.fragment_id)
    assert row is not None
    row.source = "restore"
    row.restored_from = old.version
    await session.flush()
    return saved, row


async def save_hand_edit(
    session: AsyncSession,
    conversation: Conversation,
    fragment: dict[str, Any],
    *,
    note: str,
    based_on: FragmentRow | None,
    turn_id: str | None,
) -> tuple[repos.SavedTurn, FragmentRow] | None:
    """Store code the user edited by hand as the new current version: an exchange whose user
    message is `note` and whose answer is the edited fragment, marked as the user's (and as
    edited from `based_on`). Idempotent on `turn_id`: a retried save returns the first one;
    None when `turn_id` already names a turn that is not a hand edit."""
    if turn_id:
        existing = await repos.turn_saved(session, conversation.id, turn_id)
        if existing:
            first = await session.get(FragmentRow, existing)
            if first is None or first.source != "user":
                return None
            return repos.SavedTurn(first.id, first.version), first
    saved = await repos.save_turn(
        session,
        conversation,
        user_content=[{"type": "text", "text": note}],
        fragment=fragment,
        turn_id=turn_id,
    )
    row = await session.get(FragmentRow, saved.fragment_id)
    assert row is not None
    row.source = "user"
    row.restored_from = based_on.version if based_on is not None else None
    await session.flush()
    return saved, row


# ---- data files --------------------------------------------------------------------------------


async def files(
    session: AsyncSession, conversation_id: str, *, with_content: bool = False
) -> list[WorkspaceFile]:
    """The conversation's data files, oldest first; their bytes only when asked for (a list or
    a prompt needs the name, size and preview, not megabytes)."""
    query = (
        select(WorkspaceFile)
        .where(WorkspaceFile.conversation_id == conversation_id)
        .order_by(WorkspaceFile.created_at, WorkspaceFile.name)
    )
    if not with_content:
        query = query.options(defer(WorkspaceFile.content))
    return list((await session.execute(query)).scalars())


async def file_named(
    session: AsyncSession, conversation_id: str, name: str
) -> WorkspaceFile | None:
    rows = await session.execute(
        select(WorkspaceFile).where(
            WorkspaceFile.conversation_id == conversation_id, WorkspaceFile.name == name
        )
    )
    return rows.scalar_one_or_none()


async def count_files(session: AsyncSession, conversation_id: str) -> int:
    rows = await session.execute(
        select(func.count())
        .select_from(WorkspaceFile)
        .where(WorkspaceFile.conversation_id == conversation_id)
    )
    return int(rows.scalar_one())


async def delete_file(session: AsyncSession, conversation_id: str, name: str) -> bool:
    result = await session.execute(
        delete(WorkspaceFile).where(
            WorkspaceFile.conversation_id == conversation_id, WorkspaceFile.name == name
        )
    )
    return bool(getattr(result, "rowcount", 0))
