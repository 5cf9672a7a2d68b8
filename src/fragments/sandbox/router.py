"""POST /api/sandbox: run a fragment, answer with its result as JSON or as an SSE stream.
POST /api/sandbox/prepare: make a conversation's sandbox ready while its fragment is written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sse_starlette import EventSourceResponse, ServerSentEvent

from fragments.auth.deps import CurrentUser
from fragments.conversations.turns import authorize_run, save_run
from fragments.errors import BadRequest, FragmentsError
from fragments.quota.limits import enforce_sandbox
from fragments.sandbox.service import Phase, prepare_program
from fragments.sandbox.templates import get_template
from fragments.sandbox.usage import record_sandbox_time
from fragments.schemas import InterpreterResult, SandboxRequest, WebResult
from fragments.state import StateDep, get_db

log = structlog.get_logger(__name__)

router = APIRouter()


def result_body(result: InterpreterResult | WebResult) -> dict[str, Any]:
    """The wire shape: `json` (not `json_`) as the key, and only the formats a result has."""
    body = result.model_dump(mode="json", by_alias=True)
    if isinstance(result, InterpreterResult):
        body["results"] = [
            {k: v for k, v in item.items() if v is not None} for item in body["results"]
        ]
    return body


def _check_body(body: SandboxRequest | None) -> SandboxRequest:
    if body is None:
        raise BadRequest(
            "The request body is empty; send a JSON object with a 'fragment'.", code="empty_body"
        )
    if body.fragment is None and not body.fragment_id:
        raise BadRequest(
            "Send the 'fragment' to run (or a 'fragment_id').", code="missing_fragment"
        )
    return body


class PrepareRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    template: str = ""
    conversation_id: str = ""


def _wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


@router.post(
    "/api/sandbox",
    response_model=None,
    responses={200: {"description": "An interpreter result, a web result, or an SSE stream."}},
)
async def run_sandbox(
    request: Request,
    state: StateDep,
    who: CurrentUser,
    body: Annotated[SandboxRequest | None, Body()] = None,
) -> Response:
    """Run a fragment in the caller's sandbox (a conversation keeps its sandbox). Only the
    owner of a conversation or stored fragment runs it; the result is stored with it."""
    body = _check_body(body)
    db = get_db(request)
    access = await authorize_run(
        db,
        who,
        conversation_id=body.conversation_id or None,
        fragment_id=body.fragment_id or None,
        need_fragment=body.fragment is None,
    )
    fragment = body.fragment or access.fragment
    assert fragment is not None
    # Caller mistakes (unknown template, bad paths) are HTTP errors even when streaming.
    prepare_program(fragment)
    # Counted once the run is known to be valid and the caller's: its own daily limit.
    limit_headers: dict[str, str] = {}
    owner = access.owner
    # A run right after its conversation's prepare was counted by that prepare.
    if state.settings.rate_limits:
        credits = state.prepare_credits
        prepaid = owner is not None and await credits.use(owner, fragment.template)
        if not prepaid:
            limit_headers = await enforce_sandbox(request, state.settings, db, who, state.limiter)
    service = state.sandboxes

    if not _wants_stream(request):
        began = time.monotonic()
        result = await service.execute(fragment, owner=owner, restart=body.restart)
        await record_sandbox_time(db, who, fragment.template, time.monotonic() - began)
        payload = result_body(result)
        await save_run(db, who, access, payload)
        return JSONResponse(payload, headers=limit_headers)

    async def events() -> AsyncIterator[ServerSentEvent]:
        queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue()

        async def on_phase(phase: Phase) -> None:
            await queue.put(ServerSentEvent(data=json.dumps({"phase": phase}), event="phase"))

        async def run() -> None:
            began = time.monotonic()
            try:
                result = await service.execute(
                    fragment, owner=owner, restart=body.restart, on_phase=on_phase
                )
                await record_sandbox_time(db, who, fragment.template, time.monotonic() - began)
                payload = result_body(result)
                await save_run(db, who, access, payload)
                event = ServerSentEvent(data=json.dumps(payload), event="result")
            except FragmentsError as exc:
                event = ServerSentEvent(
                    data=json.dumps({"error": exc.code, "detail": exc.detail}), event="error"
                )
            except Exception:
                log.exception("sandbox_run_failed")
                event = ServerSentEvent(
                    data=json.dumps(
                        {
                            "error": "internal",
                            "detail": "Something went wrong on our side; please try again.",
                        }
                    ),
                    event="error",
                )
            await queue.put(event)

        task = asyncio.create_task(run())
        try:
            while True:
                event = await queue.get()
                yield event
                if event.event in ("result", "error"):
                    break
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return EventSourceResponse(events(), ping=15, headers=limit_headers)


@router.post(
    "/api/sandbox/prepare",
    response_model=None,
    responses={
        200: {"description": "The conversation's sandbox: {sandbox_id, template, url}."},
        204: {"description": "This backend cannot prepare the template; run as usual."},
    },
)
async def prepare_sandbox(
    request: Request,
    state: StateDep,
    who: CurrentUser,
    body: Annotated[PrepareRequest | None, Body()] = None,
) -> Response:
    """Take or start a conversation's sandbox for a template while the model is still writing
    its fragment, so the run that follows is an in-place edit of an already-open preview.
    Only the conversation's owner prepares it (404 otherwise); it counts as a sandbox run, and
    the conversation's next run of that template is then not counted again. Idempotent."""
    if body is None or not body.template:
        raise BadRequest("Send the 'template' to prepare.", code="missing_template")
    if not body.conversation_id:
        raise BadRequest(
            "Send the 'conversation_id' whose sandbox to prepare.", code="missing_conversation"
        )
    template = get_template(body.template)
    db = get_db(request)
    access = await authorize_run(
        db, who, conversation_id=body.conversation_id, fragment_id=None, need_fragment=False
    )
    assert access.owner is not None
    limit_headers: dict[str, str] = {}
    credits = state.prepare_credits if state.settings.rate_limits else None
    # A repeated prepare is free: it answers the sandbox the first one paid for, and grants
    # nothing (the run may spend that credit meanwhile: a second grant would be a free run).
    paying = credits is not None and not await credits.holds(access.owner, template.id)
    if paying:
        limit_headers = await enforce_sandbox(request, state.settings, db, who, state.limiter)
    prepared = await state.sandboxes.prepare(template, access.owner)
    if paying and credits is not None:
        await credits.grant(access.owner, template.id)
    if prepared is None:
        return Response(status_code=204, headers=limit_headers)
    return JSONResponse(
        {"sandbox_id": prepared.sandbox_id, "template": prepared.template, "url": prepared.url},
        headers=limit_headers,
    )
