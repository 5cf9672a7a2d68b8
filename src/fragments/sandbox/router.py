"""POST /api/sandbox: run a fragment, answer with its result as JSON or as an SSE stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from fragments.errors import BadRequest, FragmentsError, NotFound
from fragments.sandbox.service import Phase, prepare_program
from fragments.schemas import Fragment, InterpreterResult, SandboxRequest, WebResult
from fragments.state import StateDep

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


def _fragment_of(body: SandboxRequest | None) -> Fragment:
    if body is None:
        raise BadRequest(
            "The request body is empty; send a JSON object with a 'fragment'.", code="empty_body"
        )
    if body.fragment is not None:
        return body.fragment
    if body.fragment_id:
        raise NotFound(
            f"Fragment '{body.fragment_id[:80]}' was not found: stored fragments cannot be "
            "looked up yet, so send the fragment itself."
        )
    raise BadRequest("Send the 'fragment' to run (or a 'fragment_id').", code="missing_fragment")


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
    body: Annotated[SandboxRequest | None, Body()] = None,
) -> Response:
    """Run a fragment in the caller's sandbox (a conversation keeps its sandbox)."""
    fragment = _fragment_of(body)
    assert body is not None
    # Caller mistakes (unknown template, bad paths) are HTTP errors even when streaming.
    prepare_program(fragment)
    owner = body.conversation_id or None
    service = state.sandboxes

    if not _wants_stream(request):
        result = await service.execute(fragment, owner=owner, restart=body.restart)
        return JSONResponse(result_body(result))

    async def events() -> AsyncIterator[ServerSentEvent]:
        queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue()

        async def on_phase(phase: Phase) -> None:
            await queue.put(ServerSentEvent(data=json.dumps({"phase": phase}), event="phase"))

        async def run() -> None:
            try:
                result = await service.execute(
                    fragment, owner=owner, restart=body.restart, on_phase=on_phase
                )
                event = ServerSentEvent(data=json.dumps(result_body(result)), event="result")
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

    return EventSourceResponse(events(), ping=15)
