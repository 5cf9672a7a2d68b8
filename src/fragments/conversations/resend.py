"""Re-sending a turn the client kept while the database was down: saved once it is back."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.errors import NotFound
from fragments.store import repos
from fragments.store.db import Identity
from fragments.store.models import Conversation

_MISSING = "There is no such conversation."


async def save_resent_turn(
    session: AsyncSession,
    who: Identity,
    conversation_id: str,
    *,
    turn_id: str,
    content: list[Any],
    fragment: dict[str, Any],
    fragment_id: str | None,
) -> tuple[Conversation, repos.SavedTurn]:
    """Save a turn that was not saved (idempotent on `turn_id`). The conversation is created
    with this id when the chat that made it could not save anything at all."""
    row = await repos.own_conversation(session, who, conversation_id)
    if row is None:
        if await repos.visible_conversation(session, who, conversation_id) is not None:
            raise NotFound(_MISSING)
        if not _valid_new_id(conversation_id):
            raise NotFound(_MISSING)
        try:
            async with session.begin_nested():
                row = await repos.create_conversation(session, who, conversation_id=conversation_id)
        except IntegrityError as exc:  # the id is taken by another tenant: invisible to us
            raise NotFound(_MISSING) from exc
    wanted = fragment_id if fragment_id and _valid_new_id(fragment_id) else None
    try:
        async with session.begin_nested():
            saved = await repos.save_turn(
                session,
                row,
                user_content=content,
                fragment=fragment,
                turn_id=turn_id,
                fragment_id=wanted,
            )
    except IntegrityError:
        # The id the client kept is taken (by another tenant's fragment, say): store the turn
        # under a new one rather than fail or reveal anything.
        saved = await repos.save_turn(
            session, row, user_content=content, fragment=fragment, turn_id=turn_id
        )
    return row, saved


def _valid_new_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)
