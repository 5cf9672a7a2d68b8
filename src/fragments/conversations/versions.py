"""Fragment versions of a conversation: list them, undo the last exchange, restore an old one.

A version can also be the user's own: code edited by hand in the code view (`hand_edits`).

Undo removes the last exchange (the user's message and its answer) from the chat, as the
original app's undo did; the version it made stays listed, marked as no longer in the chat, so
it can still be restored. Restore never rewrites history: it adds an exchange whose answer is a
copy of the old version, which becomes the current version the next model turn builds on."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field, JsonValue

from fragments.auth.deps import SessionDep, SignedInUser
from fragments.errors import FragmentsError, NotFound
from fragments.store import repos, workspace
from fragments.store.db import aware
from fragments.store.models import FragmentRow

router = APIRouter(prefix="/api/conversations", tags=["versions"])

_MISSING = "There is no such conversation."
_NO_VERSION = "There is no such version in this conversation."


class Conflict(FragmentsError):
    status_code = 409
    code = "conflict"


class VersionPublic(BaseModel):
    """One fragment version: who made it, and whether the chat still shows it."""

    id: str
    version: int
    title: str
    template: str
    # "model", "restore" (a copy of version `restored_from`) or "user" (edited by hand in the
    # code view, from version `edited_from`).
    source: str
    restored_from: int | None
    edited_from: int | None
    created_at: str
    # False once undone: listed (and restorable), no longer part of the chat.
    in_chat: bool
    current: bool


class VersionsPublic(BaseModel):
    items: list[VersionPublic]
    # The id of the version the next turn builds on (the chat's last answer); None when empty.
    current: str | None


def _public(row: FragmentRow, found: workspace.Versions) -> VersionPublic:
    source = row.source or "model"
    return VersionPublic(
        id=row.id,
        version=row.version,
        title=row.title,
        template=row.template,
        source=source,
        restored_from=row.restored_from if source == "restore" else None,
        edited_from=row.restored_from if source == "user" else None,
        created_at=aware(row.created_at).isoformat(),
        in_chat=row.id in found.in_chat,
        current=row.id == found.current,
    )


@router.get("/{conversation_id}/versions")
async def list_versions(
    conversation_id: str, user: SignedInUser, session: SessionDep
) -> VersionsPublic:
    """Every fragment version of the conversation, oldest first."""
    row = await repos.visible_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    found = await workspace.versions(session, row)
    return VersionsPublic(items=[_public(r, found) for r in found.rows], current=found.current)


class UndoRequest(BaseModel):
    # The fragment the caller believes is the last answer: a second click (or another tab)
    # that already undid it gets 409 instead of undoing one exchange more.
    fragment_id: str | None = Field(None, max_length=32)


class UndonePublic(BaseModel):
    """What an undo removed, and the version that is current now."""

    removed_messages: int
    removed_fragment_id: str | None
    current: str | None


@router.post("/{conversation_id}/undo")
async def undo(
    conversation_id: str, user: SignedInUser, session: SessionDep, body: UndoRequest | None = None
) -> UndonePublic:
    """Drop the last exchange from the chat (its version stays listed, restorable)."""
    row = await repos.own_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    last = await workspace.last_exchange(session, row)
    if not last:
        raise Conflict("There is nothing to undo in this conversation.", code="nothing_to_undo")
    answer = next((m.fragment_id for m in last if m.fragment_id), None)
    if body is not None and body.fragment_id and body.fragment_id != answer:
        raise Conflict(
            "The last answer is no longer the one you undid; reload the conversation.",
            code="stale_undo",
        )
    await workspace.drop_messages(session, row, last)
    found = await workspace.versions(session, row)
    return UndonePublic(
        removed_messages=len(last), removed_fragment_id=answer, current=found.current
    )


class RestoredPublic(BaseModel):
    """The new version made from an old one, and the exchange that now shows it."""

    fragment_id: str
    version: int
    restored_from: int
    fragment: dict[str, JsonValue]
    # The user's side of the exchange (the note saying what was restored).
    message: dict[str, JsonValue]


@router.post("/{conversation_id}/versions/{fragment_id}/restore", status_code=201)
async def restore_version(
    conversation_id: str, fragment_id: str, user: SignedInUser, session: SessionDep
) -> RestoredPublic:
    """Make an old version current as a new version; history is kept as it was."""
    row = await repos.own_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    old = await workspace.version(session, row, fragment_id[:32])
    if old is None:
        raise NotFound(_NO_VERSION)
    note = f"Restore version {old.version}" + (f" ({old.title})" if old.title else "")
    saved, new = await workspace.restore(session, row, old, note=note)
    return RestoredPublic(
        fragment_id=saved.fragment_id,
        version=saved.version,
        restored_from=old.version,
        fragment=new.body,
        message={"role": "user", "content": [{"type": "text", "text": note}]},
    )
