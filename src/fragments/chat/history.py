"""Which history a chat request is answered with: the client's, or the stored conversation's
when the client sends only the new message with `conversation_id`; windowed (see `window`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from fragments.chat.accounting import billed_to, record_usage
from fragments.chat.prompt import to_turns
from fragments.chat.summary import model_summary
from fragments.chat.window import Window, build_window, exchanges, extractive_summary
from fragments.config import Settings
from fragments.llm.types import ModelCall, ModelStreamer
from fragments.principal import Principal
from fragments.schemas import Fragment, Message
from fragments.store import repos
from fragments.store.db import Database
from fragments.store.errors import DB_DOWN

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StoredHistory:
    messages: list[Message]
    summary: str | None
    summary_turns: int


async def load_history(db: Database, who: Principal, conversation_id: str) -> StoredHistory | None:
    """The stored conversation's messages and summary; None when it cannot be read."""
    try:
        async with db.transaction(who.identity) as session:
            conversation = await repos.own_conversation(session, who.identity, conversation_id)
            if conversation is None:
                return None
            rows = await repos.chat_history(session, conversation)
            summary, turns = conversation.summary, conversation.summary_turns
    except DB_DOWN:
        log.warning("chat_history_unavailable", conversation_id=conversation_id)
        return None
    messages: list[Message] = []
    for message, body in rows:
        # As a chat request sends it: an answer carries its fragment as `object`.
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if body is not None:
            item["object"] = body
        try:
            messages.append(Message.model_validate(item))
        except ValidationError:
            continue  # a row the current schema cannot read is left out, not fatal
    return StoredHistory(messages, summary, turns or 0)


async def store_summary(
    db: Database, who: Principal, conversation_id: str, summary: str, turns: int
) -> None:
    try:
        async with db.transaction(who.identity) as session:
            conversation = await repos.own_conversation(session, who.identity, conversation_id)
            if conversation is not None:
                await repos.save_summary(session, conversation, summary, turns)
    except DB_DOWN:
        log.warning("chat_summary_not_saved", conversation_id=conversation_id)


def latest_fragment(history: list[Message]) -> Fragment | None:
    for message in reversed(history):
        if message.role == "assistant" and message.object is not None:
            return message.object
    return None


async def windowed(
    *,
    settings: Settings,
    streamer: ModelStreamer,
    db: Database,
    who: Principal,
    messages: list[Message],
    conversation_id: str | None,
    persist: bool,
    call: ModelCall,
    multimodal: bool,
) -> Window:
    """The turns of this request: the client's history, or the stored conversation's when the
    client sends only the new message; windowed unless `settings.history_window` is off. The
    summary of a stored conversation is written by the provider's cheap model when the window
    moves, and stored; otherwise it is the local extractive summary, recomputed identically on
    every request (no model call). `Window.latest` is the fragment this request edits."""
    history = messages[:-1]
    stored: StoredHistory | None = None
    if persist and conversation_id and not who.anonymous:
        stored = await load_history(db, who, conversation_id)
        if stored is not None and not history:
            history = stored.messages
    if not settings.history_window:
        turns = to_turns(
            [*history, messages[-1]],
            multimodal=multimodal,
            max_image_bytes=settings.max_image_bytes,
        )
        return Window(tuple(turns), 0, 0, latest=latest_fragment(history))
    keep, step = settings.history_turns, settings.history_step
    summary = stored.summary if stored is not None else None
    summary_turns = stored.summary_turns if stored is not None else 0
    window = build_window(
        history,
        messages[-1],
        keep=keep,
        step=step,
        summary=summary,
        summary_turns=summary_turns,
        multimodal=multimodal,
        max_image_bytes=settings.max_image_bytes,
    )
    if not window.folded or not window.to_fold:
        return window
    covered = window.folded - len(window.to_fold)
    if stored is not None and conversation_id:
        summary, result = await model_summary(
            streamer,
            call,
            summary if covered else None,
            list(window.to_fold),
            first_index=covered + 1,
            max_chars=settings.history_summary_chars,
        )
        await store_summary(db, who, conversation_id, summary, window.folded)
        if result is not None:
            await record_usage(
                db,
                who,
                conversation_id=conversation_id,
                model=f"{result.provider}/{result.model}",
                usage=result.usage,
                cost=result.cost_usd,
                billed_to=billed_to(call),
            )
    else:
        summary = extractive_summary(
            None,
            exchanges(history)[: window.folded],
            first_index=1,
            max_chars=settings.history_summary_chars,
        )
    return build_window(
        history,
        messages[-1],
        keep=keep,
        step=step,
        summary=summary,
        summary_turns=window.folded,
        multimodal=multimodal,
        max_image_bytes=settings.max_image_bytes,
    )
