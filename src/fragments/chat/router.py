"""POST /api/chat: check the request, then stream the answer as server-sent events."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse
from starlette.types import Message, Send

from fragments.auth.deps import CurrentUser
from fragments.chat.accounting import billed_to, record_usage
from fragments.chat.history import windowed
from fragments.chat.prompt import system_prompt, to_turns
from fragments.chat.request import chat_limits, check_conversation
from fragments.chat.response_cache import cached
from fragments.chat.routing import route_model
from fragments.chat.stream import chat_events
from fragments.chat.window import message_text
from fragments.conversations.turns import open_chat_turn, save_chat_turn
from fragments.llm.catalogue import resolve_model
from fragments.llm.types import ModelCall, Sampling, StreamResult, Usage
from fragments.quota.guest_budget import record_guest_tokens
from fragments.quota.limits import enforce, guest_ip
from fragments.sandbox.templates import resolve_templates
from fragments.schemas import ChatRequest, Fragment
from fragments.state import State, get_db, get_state

log = structlog.get_logger(__name__)

router = APIRouter()
# GET /api/usage rides on this router so the app's router list stays as it is.


# Async on purpose: FastAPI runs plain `def` dependencies in a worker thread, which costs more
# than everything else this request does before streaming.
async def chat_state(request: Request) -> State:
    return get_state(request)


ChatStateDep = Annotated[State, Depends(chat_state)]


class _EventStream(EventSourceResponse):
    """sse-starlette opens an anyio cancel scope around every send even without a send timeout;
    at ~55 events an answer that is a measurable share of the streaming budget."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


@router.post(
    "/api/chat",
    dependencies=[Depends(chat_limits)],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat(
    request: Request, body: ChatRequest, state: ChatStateDep, who: CurrentUser
) -> EventSourceResponse:
    """Stream a fragment: `provider`, `partial`*, `fragment`, `usage`, `done` (or `error`)."""
    settings = state.settings
    streamer = state.llm
    if streamer is None:
        raise RuntimeError("the model layer was not started (the app's lifespan did not run)")
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
    )
    # One short transaction before the stream (ownership, or a new conversation), one after it.
    db = get_db(request)
    limit_headers: dict[str, str] = {}
    if settings.rate_limits:
        own_key = config.api_key is not None or config.base_url is not None
        limit_headers = await enforce(
            request,
            settings,
            db,
            who,
            state.limiter,
            state.usage_cache,
            own_key=own_key,
            # A saved key serves a request that brings none (below): an own-key request too.
            saved_key_for=model.provider_id if config.api_key is None else None,
        )
    user_content = body.messages[-1].model_dump(mode="json", exclude_none=True)["content"]
    turn = await open_chat_turn(
        db,
        who,
        body.conversation_id,
        user_content,
        settings=settings,
        # A key the user saved (PUT /api/keys/{provider}) serves requests that bring none.
        key_for=model.provider_id if config.api_key is None else None,
    )
    if turn.api_key:
        call = dataclasses.replace(call, api_key=turn.api_key)
    # Whose key pays: the caller's own (brought or saved) is shown in usage, never charged.
    paid_by = billed_to(call)
    # The client's history, or the stored conversation's when it sends only the new message.
    window = await windowed(
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
    latest = window.latest
    # From here on `model` is the one that answers: the call, the provider event, pricing.
    model, _routed = route_model(settings, body, model, edit=latest is not None)
    call = dataclasses.replace(
        call,
        provider_id=model.provider_id,
        model_id=model.id,
        system=system_prompt(
            templates,
            current=latest.template if latest is not None else None,
            message=message_text(body.messages[-1]),
        ),
        turns=window.turns,
        cache_turns=window.cache_turns,
    )

    # This instance counts what it records against the team's budget at once (see `budget`).
    spent = state.usage_cache
    charged_team = who.team_id if not who.anonymous else None
    # Guests' platform-paid tokens also count against their IP's monthly guest budget.
    guest_from = guest_ip(request, settings, who) if settings.rate_limits else None

    async def count_guest(usage: Usage) -> None:
        if guest_from is None or paid_by != "platform":
            return
        tokens = usage.input_tokens + usage.output_tokens
        try:
            await record_guest_tokens(state.limiter, guest_from, tokens)
        except Exception:  # accounting must never fail a chat
            log.warning("guest_tokens_not_recorded", tokens=tokens)

    async def save(fragment: Fragment, result: StreamResult) -> tuple[str, bool]:
        usage = result.usage
        spent.add(charged_team, usage.input_tokens + usage.output_tokens, paid_by)
        await count_guest(usage)
        return await save_chat_turn(
            db,
            who,
            turn,
            user_content=user_content,
            fragment=fragment,
            turn_id=body.turn_id,
            model=f"{model.provider_id}/{model.id}",
            usage={
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
            },
            cost_usd=result.cost_usd,
            billed_to=paid_by,
        )

    async def charge(usage: Usage, cost: float) -> None:
        spent.add(charged_team, usage.input_tokens + usage.output_tokens, paid_by)
        await count_guest(usage)
        await record_usage(
            db,
            who,
            conversation_id=turn.conversation_id,
            model=f"{model.provider_id}/{model.id}",
            usage=usage,
            cost=cost,
            billed_to=paid_by,
        )

    if settings.response_cache:
        streamer = cached(
            state.response_store, settings, streamer, regenerate=body.config.regenerate
        )
    events = chat_events(
        streamer,
        call,
        pinned=templates[0] if body.template != "auto" else None,
        conversation_id=turn.conversation_id,
        interval=settings.partial_interval_seconds,
        # An anonymous guest's turn is not stored (save_chat_turn and record_usage do nothing
        # for it), but its tokens still count against its IP's guest budget.
        save=save if turn.persist or guest_from is not None else None,
        charge=charge if turn.persist or guest_from is not None else None,
    )
    return _EventStream(
        events,
        ping=15,
        headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store", **limit_headers},
    )
