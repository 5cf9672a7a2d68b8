"""One chat answer in named stages: check → limit → authorise → window → route → stream, with
the persist stage handed to the stream. The router parses the request and returns what
`answer` builds; every stage here is one small call so each reads (and moves) on its own.

Limits are counted before ownership is checked, as they always were: a request for another
tenant's conversation still counts against the caller's limit."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Request

from fragments.chat.accounting import billed_to, record_usage
from fragments.chat.edits import EditingStreamer, EditPlan, edit_call, plan_edit
from fragments.chat.fallbacks import fallback_steps
from fragments.chat.history import windowed
from fragments.chat.prompt import describe_data_files, system_prompt, to_turns
from fragments.chat.request import check_conversation
from fragments.chat.response_cache import cached
from fragments.chat.routing import route_model
from fragments.chat.stream import Answered, chat_events
from fragments.chat.window import Window, message_text
from fragments.config import Settings
from fragments.conversations.turns import ChatTurn, open_chat_turn, save_chat_turn
from fragments.conversations.uploads import file_notes
from fragments.llm.catalogue import CatalogueModel, resolve_model
from fragments.llm.types import ModelCall, ModelStreamer, Sampling, StreamResult, Usage
from fragments.observability.tracing import span
from fragments.principal import Principal
from fragments.quota.budget import UsageCache
from fragments.quota.guest_budget import record_guest_tokens
from fragments.quota.limits import enforce, guest_ip
from fragments.sandbox.templates import Template, resolve_templates
from fragments.schemas import ChatRequest, Fragment
from fragments.state import State, get_db
from fragments.store.db import Database
from fragments.store.models import BilledTo

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ChatReply:
    """What the router sends: the SSE bytes of one answer and the rate-limit headers."""

    events: AsyncIterator[bytes]
    headers: dict[str, str]


@dataclass(frozen=True)
class _Checked:
    """A request that passed every check that needs no database: its templates, model, call."""

    templates: list[Template]
    model: CatalogueModel
    call: ModelCall


async def answer(request: Request, state: State, body: ChatRequest, who: Principal) -> ChatReply:
    """Check, limit, authorise, window and route one chat request; the reply streams it."""
    settings = state.settings
    streamer = state.llm
    if streamer is None:
        raise RuntimeError("the model layer was not started (the app's lifespan did not run)")
    checked = check(body, settings)
    # One short transaction before the stream (ownership, or a new conversation), one after it.
    db = get_db(request)
    with span("chat.rate_limit"):
        headers = await limit(request, state, db, who, body, checked.model)
    user_content = body.messages[-1].model_dump(mode="json", exclude_none=True)["content"]
    turn = await authorise(db, who, body, checked.model, user_content, settings)
    call = checked.call
    if turn.api_key:
        call = dataclasses.replace(call, api_key=turn.api_key)
    with span("chat.history_window"):
        window = await context_window(settings, streamer, db, who, body, turn, call, checked.model)
    # From here on `model` is the one that answers: the call, the provider event, pricing.
    model, call = route(settings, body, checked, window, call)
    # The conversation's uploaded data files: their names, sizes and first lines.
    files = (
        describe_data_files(await file_notes(db, who, turn.conversation_id)) if turn.persist else ""
    )
    if files:
        call = dataclasses.replace(call, system=f"{call.system}\n{files}")
    # An edit of the current fragment is asked for as search/replace blocks (chat/edits.py).
    edit = plan_edit(
        settings,
        window.latest,
        call,
        request=message_text(body.messages[-1]),
        morph=state.morph,
        breakers=state.breakers,
    )
    if edit is not None:
        call = edit_call(call, edit)
    ledger = Ledger(
        request,
        state,
        db,
        who,
        turn,
        user_content=user_content,
        turn_id=body.turn_id,
        model=f"{model.provider_id}/{model.id}",
        paid_by=billed_to(call),
    )
    events = stream(state, streamer, body, checked, call, turn, ledger, edit)
    return ChatReply(events, headers)


def check(body: ChatRequest, settings: Settings) -> _Checked:
    """The checks that need no database: conversation id, templates, model, images."""
    check_conversation(body)
    templates = resolve_templates(body.template)
    model = resolve_model(body.model, has_base_url=body.config.base_url is not None)
    # Checked before anything is stored or counted (images a model cannot take are a 400).
    turns = to_turns(
        body.messages, multimodal=model.multimodal, max_image_bytes=settings.max_image_bytes
    )
    config = body.config
    call = ModelCall(
        provider_id=model.provider_id,
        model_id=model.id,
        system=system_prompt(templates),
        turns=tuple(turns),
        sampling=Sampling(
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            max_tokens=config.max_tokens,
            frequency_penalty=config.frequency_penalty,
            presence_penalty=config.presence_penalty,
        ),
        api_key=config.api_key,
        base_url=config.base_url,
        fallbacks=fallback_steps(body, model),
    )
    return _Checked(templates, model, call)


async def limit(
    request: Request,
    state: State,
    db: Database,
    who: Principal,
    body: ChatRequest,
    model: CatalogueModel,
) -> dict[str, str]:
    """The caller's rate limits and budgets: their headers; 429 past them."""
    settings = state.settings
    if not settings.rate_limits:
        return {}
    config = body.config
    return await enforce(
        request,
        settings,
        db,
        who,
        state.limiter,
        state.usage_cache,
        own_key=config.api_key is not None or config.base_url is not None,
        # A saved key serves a request that brings none (below): an own-key request too.
        saved_key_for=model.provider_id if config.api_key is None else None,
    )


async def authorise(
    db: Database,
    who: Principal,
    body: ChatRequest,
    model: CatalogueModel,
    user_content: list[dict[str, Any]],
    settings: Settings,
) -> ChatTurn:
    """The caller's own conversation (404 otherwise) or a new one, and their saved key."""
    return await open_chat_turn(
        db,
        who,
        body.conversation_id,
        user_content,
        settings=settings,
        # A key the user saved (PUT /api/keys/{provider}) serves requests that bring none.
        key_for=model.provider_id if body.config.api_key is None else None,
    )


async def context_window(
    settings: Settings,
    streamer: ModelStreamer,
    db: Database,
    who: Principal,
    body: ChatRequest,
    turn: ChatTurn,
    call: ModelCall,
    model: CatalogueModel,
) -> Window:
    """The client's history, or the stored conversation's when it sends only the new message."""
    return await windowed(
        settings=settings,
        streamer=streamer,
        db=db,
        who=who,
        messages=body.messages,
        conversation_id=body.conversation_id,
        persist=turn.persist,
        call=call,
        multimodal=model.multimodal,
    )


def route(
    settings: Settings, body: ChatRequest, checked: _Checked, window: Window, call: ModelCall
) -> tuple[CatalogueModel, ModelCall]:
    """The model that answers (an edit may go to a cheaper one) and the call it gets."""
    latest = window.latest
    model, _routed = route_model(settings, body, checked.model, edit=latest is not None)
    call = dataclasses.replace(
        call,
        provider_id=model.provider_id,
        model_id=model.id,
        system=system_prompt(
            checked.templates,
            current=latest.template if latest is not None else None,
            message=message_text(body.messages[-1]),
        ),
        turns=window.turns,
        cache_turns=window.cache_turns,
    )
    return model, call


def stream(
    state: State,
    streamer: ModelStreamer,
    body: ChatRequest,
    checked: _Checked,
    call: ModelCall,
    turn: ChatTurn,
    ledger: Ledger,
    edit: EditPlan | None = None,
) -> AsyncIterator[bytes]:
    """The answer's SSE events; the ledger persists it (or charges a cut) at the end."""
    settings = state.settings
    if settings.response_cache:
        streamer = cached(
            state.response_store, settings, streamer, regenerate=body.config.regenerate
        )
    if edit is not None:
        # Outside the cache: a cached edit is merged again into the current code.
        streamer = EditingStreamer(streamer, edit)
    # An anonymous guest's turn is not stored (save_chat_turn and record_usage do nothing for
    # it), but its tokens still count against its IP's guest budget.
    accounted = turn.persist or ledger.guest_from is not None
    return chat_events(
        streamer,
        call,
        pinned=checked.templates[0] if body.template != "auto" else None,
        conversation_id=turn.conversation_id,
        interval=settings.partial_interval_seconds,
        save=ledger.save if accounted else None,
        charge=ledger.charge if accounted else None,
        answered=ledger.answered,
        base=edit.base if edit is not None else None,
    )


class Ledger:
    """The persist stage: after the stream, the turn and its usage are stored and the tokens
    counted against the team's budget and the guest's IP. Called once an answer, off the
    per-chunk path."""

    def __init__(
        self,
        request: Request,
        state: State,
        db: Database,
        who: Principal,
        turn: ChatTurn,
        *,
        user_content: list[dict[str, Any]],
        turn_id: str | None,
        model: str,
        paid_by: BilledTo,
    ) -> None:
        settings = state.settings
        self._limiter = state.limiter
        self._db = db
        self._who = who
        self._turn = turn
        self._user_content = user_content
        self._turn_id = turn_id
        self._model = model
        # Whose key pays: the caller's own (brought or saved) is shown in usage, never charged.
        self._paid_by = paid_by
        # This instance counts what it records against the team's budget at once (see `budget`).
        self._spent: UsageCache = state.usage_cache
        self._analytics = state.analytics
        self._team = who.team_id if not who.anonymous else None
        # Guests' platform-paid tokens also count against their IP's monthly guest budget.
        self.guest_from = guest_ip(request, settings, who) if settings.rate_limits else None

    async def save(self, fragment: Fragment, result: StreamResult) -> tuple[str, bool]:
        """Store a completed answer: (fragment_id, saved)."""
        usage = result.usage
        await self._count(usage)
        return await save_chat_turn(
            self._db,
            self._who,
            self._turn,
            user_content=self._user_content,
            fragment=fragment,
            turn_id=self._turn_id,
            # The model that answered: a failover chain may have moved on from the one asked.
            model=f"{result.provider}/{result.model}",
            usage={
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
            },
            cost_usd=result.cost_usd,
            billed_to=self._paid_by,
        )

    async def charge(self, usage: Usage, cost: float, model: str | None = None) -> None:
        """Record the usage of an answer cut off before it completed, or of an attempt a
        failover chain gave up, against `model` (`provider/model`; default: the one asked)."""
        await self._count(usage)
        await record_usage(
            self._db,
            self._who,
            conversation_id=self._turn.conversation_id,
            model=model or self._model,
            usage=usage,
            cost=cost,
            billed_to=self._paid_by,
        )

    async def _count(self, usage: Usage) -> None:
        tokens = usage.input_tokens + usage.output_tokens
        self._spent.add(self._team, tokens, self._paid_by)
        if self.guest_from is None or self._paid_by != "platform":
            return
        try:
            await record_guest_tokens(self._limiter, self.guest_from, tokens)
        except Exception:  # accounting must never fail a chat
            log.warning("guest_tokens_not_recorded", tokens=tokens)

    def answered(self, done: Answered) -> None:
        """The product-analytics event of a completed answer: figures only, no content."""
        usage = done.result.usage
        first = done.first_token_seconds
        self._analytics.capture(
            "chat answered",
            self._who.user_id,
            self._who.team_id,
            conversation_id=self._turn.conversation_id if self._turn.persist else None,
            fragment_id=done.fragment_id,
            template=done.template,
            provider=done.result.provider,
            model=done.result.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cost_usd=done.result.cost_usd,
            duration_ms=round(done.seconds * 1000),
            first_token_ms=None if first is None else round(first * 1000),
        )
