"""Code the user edited by hand in the code view, stored as a new version of the conversation.

The edited fragment is checked like the model's answer (a known template, some code, safe file
paths) and size-limited, then stored as an exchange, as a restore is: a short user note and an
answer carrying the edited fragment. It becomes the current version, so the next model turn
starts from the user's code, and the versions list shows it as the user's."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field, JsonValue

from fragments.auth.deps import SessionDep, SignedInUser
from fragments.conversations.versions import Conflict
from fragments.errors import BadRequest, NotFound, PayloadTooLarge
from fragments.fragment_rules import fragment_files
from fragments.schemas import Fragment
from fragments.state import SettingsDep
from fragments.store import repos, workspace
from fragments.templates import TEMPLATES

router = APIRouter(prefix="/api/conversations", tags=["versions"])

_MISSING = "There is no such conversation."
_NO_VERSION = "The version this edit starts from is not in this conversation."


class HandEdit(BaseModel):
    """A fragment whose code the user changed by hand."""

    fragment: Fragment
    # The version the user started from (shown as "edited from vN"); must be in this conversation.
    based_on: str | None = Field(None, max_length=32)
    # A client-made id: a save retried after a lost reply stores one version, not two.
    turn_id: str | None = Field(None, min_length=1, max_length=64)


class HandEditPublic(BaseModel):
    """The new version and the exchange that now shows it."""

    fragment_id: str
    version: int
    edited_from: int | None
    fragment: dict[str, JsonValue]
    # The user's side of the exchange (the note saying the code was edited by hand).
    message: dict[str, JsonValue]


def code_bytes(fragment: Fragment) -> int:
    """What the edit weighs: its code and every file's path and content, in UTF-8."""
    total = len(fragment.code.encode()) + len(fragment.file_path.encode())
    for entry in fragment.files:
        total += len(entry.file_path.encode()) + len(entry.file_content.encode())
    return total


def checked(fragment: Fragment, max_bytes: int) -> Fragment:
    """The edited fragment made runnable as the model's would be, or a clear 400/413."""
    size = code_bytes(fragment)
    if size > max_bytes:
        raise PayloadTooLarge(
            f"The edited code is {size // 1024} KB; at most {max_bytes // 1024} KB is kept.",
            code="edit_too_large",
        )
    template = TEMPLATES.get(fragment.template)
    if template is None:
        shown = fragment.template[:60] or "none"
        raise BadRequest(f"There is no template '{shown}'.", code="unknown_template")
    if not fragment.code.strip() and not any(f.file_content.strip() for f in fragment.files):
        raise BadRequest("The edited fragment has no code.", code="empty_code")
    fragment_files(fragment)  # paths: relative, inside the app's folder (400 invalid_path)
    if not fragment.file_path and not fragment.files:
        fragment.file_path = template.file
    if fragment.port is None and template.port is not None:
        fragment.port = template.port
    return fragment


@router.post("/{conversation_id}/versions", status_code=201)
async def save_hand_edit(
    conversation_id: str,
    body: HandEdit,
    user: SignedInUser,
    session: SessionDep,
    settings: SettingsDep,
) -> HandEditPublic:
    """Store the user's hand-edited code as the new current version."""
    row = await repos.own_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    fragment = checked(body.fragment, settings.edit_max_bytes)
    based_on = None
    if body.based_on:
        based_on = await workspace.version(session, row, body.based_on)
        if based_on is None:
            raise NotFound(_NO_VERSION, code="not_found")
    note = "Edited the code by hand" + (f" (from version {based_on.version})" if based_on else "")
    result = await workspace.save_hand_edit(
        session,
        row,
        fragment.model_dump(mode="json"),
        note=note,
        based_on=based_on,
        turn_id=body.turn_id,
    )
    if result is None:
        raise Conflict("This turn id already names another turn.", code="turn_id_taken")
    saved, new = result
    return HandEditPublic(
        fragment_id=saved.fragment_id,
        version=saved.version,
        edited_from=new.restored_from,
        fragment=new.body,
        message={"role": "user", "content": [{"type": "text", "text": note}]},
    )
