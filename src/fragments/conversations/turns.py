"""Saving chat turns, kept off the streaming path: one short transaction before the stream
(ownership, or a new conversation) and one after it (the turn)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from fragments.auth.keys import saved_key
from fragments.config import Settings
from fragments.errors import NotFound
from fragments.principal import Principal
from fragments.schemas import Fragment
from fragments.store import repos
from fragments.store.db import Database
from fragments.store.errors import DB_DOWN
from fragments.store.models import BilledTo

log = structlog.get_logger(__name__)

_MISSING = "There is no such conversation."


@dataclass(frozen=True)
class ChatTurn:
    conversation_id: str
    # False for anonymous callers: nothing of theirs is stored.
    persist: bool
    # The caller's saved key for the provider, when asked for and saved.
    api_key: str | None = None


def _title(content: list[dict[str, Any]]) -> str:
    for part in content:
        if part.get("type") == "text" and part.get("text"):
            return str(part["text"]).strip().splitlines()[0][:80]
    return ""


async def open_chat_turn(
    db: Database,
    who: Principal,
    conversation_id: str | None,
    user_content: list[dict[str, Any]],
    *,
    settings: Settings | None = None,
    key_for: str | None = None,
) -> ChatTurn:
    """Check the caller owns the conversation (404 otherwise), or create one; in the same short
    transaction, read the caller's saved key for provider `key_for`."""
    if who.anonymous:
        return ChatTurn(conversation_id or uuid.uuid4().hex, persist=False)
    assert who.user_id is not None
    try:
        async with db.transaction(who.identity) as session:
            api_key = None
            if key_for and settings is not None:
                api_key = await saved_key(session, settings, who.user_id, key_for)
            if conversation_id:
                if await repos.own_conversation(session, who.identity, conversation_id) is None:
                    raise NotFound(_MISSING)
                return ChatTurn(conversation_id, persist=True, api_key=api_key)
            row = await repos.create_conversation(session, who.identity, title=_title(user_content))
            return ChatTurn(row.id, persist=True, api_key=api_key)
    except DB_DOWN:
        # Chat goes on without the database; the turn is saved at the end if it is back, or
        # re-sent by the client (POST /api/conversations/{id}/turns).
        log.warning("chat_database_down", user_id=who.user_id)
        if conversation_id and re.fullmatch(r"[0-9a-f]{32}", conversation_id):
            return ChatTurn(conversation_id, persist=True)
        return ChatTurn(uuid.uuid4().hex, persist=True)


async def save_chat_turn(
    db: Database,
    who: Principal,
    turn: ChatTurn,
    *,
    user_content: list[dict[str, Any]],
    fragment: Fragment,
    turn_id: str | None,
    model: str,
    usage: dict[str, int],
    cost_usd: float | None,
    billed_to: BilledTo = "platform",
) -> tuple[str, bool]:
    """(fragment_id, saved). Never raises: a failed save is `saved: false`, not a failed chat."""
    fragment_id = uuid.uuid4().hex
    if not turn.persist:
        return fragment_id, False
    try:
        async with db.transaction(who.identity) as session:
            conversation = await repos.own_conversation(session, who.identity, turn.conversation_id)
            if conversation is None:
                # Created while the database was down: make it now, under the same id.
                conversation = await repos.create_conversation(
                    session,
                    who.identity,
                    title=_title(user_content),
                    conversation_id=turn.conversation_id,
                )
            saved = await repos.save_turn(
                session,
                conversation,
                user_content=user_content,
                fragment=fragment.model_dump(mode="json"),
                turn_id=turn_id,
                fragment_id=fragment_id,
            )
            await repos.record_usage(
                session,
                who.identity,
                conversation_id=conversation.id,
                model=model,
                tokens=usage,
                cost_usd=cost_usd,
                billed_to=billed_to,
            )
            return saved.fragment_id, True
    except (*DB_DOWN, SQLAlchemyError):
        log.warning("chat_turn_not_saved", conversation_id=turn.conversation_id, exc_info=True)
        return fragment_id, False
