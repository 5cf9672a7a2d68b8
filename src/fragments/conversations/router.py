"""/api/conversations: list, create, read, rename/share, delete, re-send a turn."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from fragments.auth.deps import SessionDep, SignedInUser
from fragments.conversations.public import (
    ConversationDetailPublic,
    ConversationItemPublic,
    ConversationPagePublic,
    ConversationPublic,
    SavedTurnPublic,
    conversation_detail,
)
from fragments.conversations.resend import save_resent_turn
from fragments.errors import NotFound
from fragments.schemas import Fragment, Message
from fragments.state import SettingsDep
from fragments.store import repos

router = APIRouter(prefix="/api/conversations", tags=["conversations"])

_MISSING = "There is no such conversation."


class NewConversation(BaseModel):
    title: str = Field("", max_length=200)


class ConversationPatch(BaseModel):
    title: str | None = Field(None, max_length=200)
    shared: bool | None = None


class Turn(BaseModel):
    """A turn the client kept while the database was down, re-sent once it is back."""

    turn_id: str = Field(min_length=1, max_length=64)
    message: Message
    fragment: Fragment
    fragment_id: str | None = Field(None, max_length=32)


@router.get("")
async def list_conversations(
    user: SignedInUser,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ConversationPagePublic:
    """The caller's conversations and their team's shared ones, newest first."""
    size = limit or settings.conversations_page_size
    rows = await repos.list_conversations(session, user.identity, limit=size + 1, offset=offset)
    return ConversationPagePublic(
        items=[
            ConversationItemPublic(
                **ConversationPublic.of(c).model_dump(), owned=c.user_id == user.user_id
            )
            for c in rows[:size]
        ],
        next_offset=offset + size if len(rows) > size else None,
    )


@router.post("", status_code=201)
async def create_conversation(
    body: NewConversation, user: SignedInUser, session: SessionDep
) -> ConversationPublic:
    row = await repos.create_conversation(session, user.identity, title=body.title)
    return ConversationPublic.of(row)


# Unset fields are left out: a message without a fragment has no `object` or `fragment_id`.
@router.get("/{conversation_id}", response_model_exclude_unset=True)
async def get_conversation(
    conversation_id: str, user: SignedInUser, session: SessionDep
) -> ConversationDetailPublic:
    row = await repos.visible_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    contents = await repos.conversation_contents(session, row)
    return conversation_detail(row, contents, owned=row.user_id == user.user_id)


@router.patch("/{conversation_id}")
async def patch_conversation(
    conversation_id: str, body: ConversationPatch, user: SignedInUser, session: SessionDep
) -> ConversationPublic:
    row = await repos.own_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    if body.title is not None:
        row.title = body.title.strip()
    if body.shared is not None:
        row.shared = body.shared
    await session.flush()
    return ConversationPublic.of(row)


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: str, user: SignedInUser, session: SessionDep
) -> None:
    row = await repos.own_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    await repos.delete_conversation(session, row)


@router.post("/{conversation_id}/turns")
async def resend_turn(
    conversation_id: str, body: Turn, user: SignedInUser, session: SessionDep
) -> SavedTurnPublic:
    """Save a turn that was not saved (idempotent on `turn_id`). The conversation is created
    with this id when the chat that made it could not save anything at all."""
    row, saved = await save_resent_turn(
        session,
        user.identity,
        conversation_id,
        turn_id=body.turn_id,
        content=body.message.model_dump(mode="json", exclude_none=True)["content"],
        fragment=body.fragment.model_dump(mode="json"),
        fragment_id=body.fragment_id,
    )
    return SavedTurnPublic(
        conversation_id=row.id, fragment_id=saved.fragment_id, version=saved.version, saved=True
    )
