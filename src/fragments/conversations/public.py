"""The JSON bodies the conversation routes answer with, mapped from the repositories' rows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, JsonValue

from fragments.store.db import aware
from fragments.store.models import Conversation, ExecutionResultRow, FragmentRow, MessageRow
from fragments.store.repos import ConversationContents


def _iso(value: datetime) -> str:
    return aware(value).isoformat()


class ConversationPublic(BaseModel):
    id: str
    title: str
    shared: bool
    user_id: str
    team_id: str
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, c: Conversation) -> ConversationPublic:
        return cls(
            id=c.id,
            title=c.title,
            shared=c.shared,
            user_id=c.user_id,
            team_id=c.team_id,
            created_at=_iso(c.created_at),
            updated_at=_iso(c.updated_at),
        )


class ConversationItemPublic(ConversationPublic):
    """A conversation as the caller sees it in a list: theirs, or shared by their team."""

    owned: bool


class ConversationPagePublic(BaseModel):
    items: list[ConversationItemPublic]
    # Where the next page starts; None on the last page.
    next_offset: int | None


class MessagePublic(BaseModel):
    """A stored message; an answer carries its fragment as `object` (absent otherwise)."""

    id: str
    role: str
    content: list[JsonValue]
    object: dict[str, JsonValue] | None = None
    fragment_id: str | None = None


class FragmentVersionPublic(BaseModel):
    id: str
    version: int
    template: str
    title: str
    files: list[JsonValue]
    fragment: dict[str, JsonValue]
    created_at: str


class RunResultPublic(BaseModel):
    """The latest sandbox result stored with one of the conversation's fragments."""

    fragment_id: str
    sandbox_id: str | None
    result: dict[str, JsonValue]
    created_at: str


class ConversationDetailPublic(ConversationItemPublic):
    messages: list[MessagePublic]
    fragments: list[FragmentVersionPublic]
    latest_result: RunResultPublic | None


def _message(m: MessageRow, by_id: dict[str, FragmentRow]) -> MessagePublic:
    fragment = by_id.get(m.fragment_id) if m.fragment_id else None
    if fragment is None:
        # `object` and `fragment_id` stay unset, so the answer leaves them out.
        return MessagePublic(id=m.id, role=m.role, content=m.content)
    return MessagePublic(
        id=m.id, role=m.role, content=m.content, object=fragment.body, fragment_id=fragment.id
    )


def _version(f: FragmentRow) -> FragmentVersionPublic:
    return FragmentVersionPublic(
        id=f.id,
        version=f.version,
        template=f.template,
        title=f.title,
        files=f.files,
        fragment=f.body,
        created_at=_iso(f.created_at),
    )


def _result(r: ExecutionResultRow) -> RunResultPublic:
    return RunResultPublic(
        fragment_id=r.fragment_id,
        sandbox_id=r.sandbox_id,
        result=r.result,
        created_at=_iso(r.created_at),
    )


def conversation_detail(
    c: Conversation, contents: ConversationContents, *, owned: bool
) -> ConversationDetailPublic:
    """Messages in order, every fragment version, and the latest execution result."""
    by_id = {f.id: f for f in contents.fragments}
    latest = contents.latest_result
    return ConversationDetailPublic(
        **ConversationPublic.of(c).model_dump(),
        owned=owned,
        messages=[_message(m, by_id) for m in contents.messages],
        fragments=[_version(f) for f in contents.fragments],
        latest_result=_result(latest) if latest is not None else None,
    )


class SavedTurnPublic(BaseModel):
    """A re-sent turn, stored."""

    conversation_id: str
    fragment_id: str
    version: int
    saved: bool
