"""POST /api/sandbox: run a fragment, answer with its result as JSON or as an SSE stream.
POST /api/sandbox/prepare: make a conversation's sandbox ready while its fragment is written."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sse_starlette import EventSourceResponse

from fragments.auth.deps import CurrentUser
from fragments.errors import BadRequest
from fragments.sandbox.public import PreparedSandboxPublic, SandboxResultPublic
from fragments.sandbox.runs import prepare, start_run
from fragments.schemas import SandboxRequest
from fragments.state import StateDep

router = APIRouter()


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


def _wants_async(request: Request) -> bool:
    """RFC 7240's `Prefer: respond-async` (among other preferences, any case)."""
    preferences = request.headers.get("prefer", "").lower().replace(";", ",").split(",")
    return "respond-async" in (p.strip() for p in preferences)


# The job a run or prepare runs as (its events: `/api/ws`).
JOB_ID_HEADER = "X-Job-Id"


@router.post(
    "/api/sandbox",
    response_model=None,
    responses={
        200: {
            "description": "An interpreter result, a web result, or an SSE stream.",
            "model": SandboxResultPublic,
            "content": {"text/event-stream": {}},
        }
    },
)
async def run_sandbox(
    request: Request,
    state: StateDep,
    who: CurrentUser,
    body: Annotated[SandboxRequest | None, Body()] = None,
) -> Response:
    """Run a fragment in the caller's sandbox (a conversation keeps its sandbox). Only the
    owner of a conversation or stored fragment runs it; the result is stored with it.

    Every run is a job: its id is in the `X-Job-Id` header of every answer, and the run goes
    on when the client goes away; `/api/ws` follows it (docs/websocket.md). With `Prefer:
    respond-async` the answer is `202 {"job_id"}` at once, for a client that follows the job
    over the WebSocket."""
    run = await start_run(request, state, who, _check_body(body))
    started = run.start()
    headers = {**run.headers, JOB_ID_HEADER: run.job_id}
    if _wants_async(request):
        headers["Preference-Applied"] = "respond-async"
        return JSONResponse({"job_id": run.job_id}, status_code=202, headers=headers)
    if _wants_stream(request):
        return EventSourceResponse(run.events(), ping=15, headers=headers)
    return JSONResponse(await run.result(started), headers=headers)


@router.post(
    "/api/sandbox/prepare",
    response_model=None,
    responses={
        200: {"description": "The conversation's sandbox.", "model": PreparedSandboxPublic},
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
    done = await prepare(request, state, who, body.template, body.conversation_id)
    headers = {**done.headers, JOB_ID_HEADER: done.job_id}
    prepared = done.sandbox
    if prepared is None:
        return Response(status_code=204, headers=headers)
    public = PreparedSandboxPublic(
        sandbox_id=prepared.sandbox_id, template=prepared.template, url=prepared.url
    )
    return JSONResponse(public.model_dump(), headers=headers)
