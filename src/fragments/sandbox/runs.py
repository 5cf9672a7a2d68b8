"""Running a fragment for a caller and preparing a conversation's sandbox: authorise, count,
run, record the time, store the result. The router parses and answers with what these build."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from fastapi import Request
from sse_starlette import ServerSentEvent

from fragments.errors import FragmentsError
from fragments.observability import tracing
from fragments.ports import JobBoard, JobEventType, JobOwner, JobPublisher
from fragments.principal import Principal
from fragments.quota.limits import enforce_sandbox
from fragments.sandbox.access import RunAccess, authorize_run, save_run
from fragments.sandbox.live import follow_job, new_job_id, public_error
from fragments.sandbox.service import Phase, PhaseCallback, PreparedSandbox, prepare_program
from fragments.sandbox.telemetry import RunClock, run_ended
from fragments.sandbox.templates import get_template
from fragments.sandbox.usage import record_sandbox_time
from fragments.schemas import Fragment, InterpreterResult, SandboxRequest, WebResult
from fragments.state import State, get_db
from fragments.store.db import Database

log = structlog.get_logger(__name__)

_INTERNAL = "Something went wrong on our side; please try again."


def result_body(result: InterpreterResult | WebResult) -> dict[str, Any]:
    """The wire shape: `json` (not `json_`) as the key, and only the formats a result has."""
    body = result.model_dump(mode="json", by_alias=True)
    if body.get("notice") is None:
        body.pop("notice", None)
    if isinstance(result, InterpreterResult):
        body["results"] = [
            {k: v for k, v in item.items() if v is not None} for item in body["results"]
        ]
    return body


@dataclass(frozen=True)
class Run:
    """A run that passed its checks and was counted, as the job `job_id` on the State's job
    board: `start` it, then await its result or follow its `events`."""

    state: State
    db: Database
    who: Principal
    access: RunAccess
    fragment: Fragment
    restart: bool
    headers: dict[str, str]
    job_id: str

    def start(self) -> Awaitable[dict[str, Any]]:
        """Run it detached from the request: a client that goes away (a reload, a closed tab)
        leaves it running, and its result is the job's last event. Await the answer through
        `asyncio.shield` (or `result`): a cancelled request must not cancel the run."""
        return self.state.jobs.detach(self._as_job())

    async def result(self, started: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """The started run's result JSON (stored with its fragment), or its FragmentsError."""
        return await asyncio.shield(started)

    async def events(self) -> AsyncIterator[ServerSentEvent]:
        """The started run as `phase` events, then `result` (or `error`), read from its job's
        event stream."""
        within = self.state.settings.job_wait_seconds + _FOLLOW_MARGIN_SECONDS
        try:
            async for event in follow_job(self.state.jobs, self.job_id, within=within):
                if event.type == "phase":
                    phase = event.data.get("phase")
                    if phase in _SSE_PHASES:  # `queued` is the WebSocket's, new to SSE clients
                        yield ServerSentEvent(data=json.dumps({"phase": phase}), event="phase")
                elif event.type == "result":
                    yield ServerSentEvent(data=json.dumps(event.data), event="result")
                else:
                    yield ServerSentEvent(data=json.dumps(public_error(event.data)), event="error")
        except TimeoutError:
            yield _error("sandbox_unavailable", "The sandbox did not answer in time.")

    async def _as_job(self) -> dict[str, Any]:
        """The run, publishing its phases and its end on the job's stream (unless the backend's
        nodes publish them there themselves)."""
        board, job_id = self.state.jobs, self.job_id
        published_by_node = isinstance(self.state.sandboxes, JobPublisher)

        async def on_phase(phase: Phase) -> None:
            try:
                await board.publish(job_id, "phase", {"phase": phase})
            except Exception:  # a lost phase is not worth failing the run
                log.warning("sandbox_phase_not_published", job_id=job_id, exc_info=True)

        try:
            payload = await self._execute(None if published_by_node else on_phase)
        except FragmentsError as exc:
            await self._conclude("error", {"error": exc.code, "detail": exc.detail})
            raise
        except Exception:
            log.exception("sandbox_run_failed", job_id=job_id)
            await self._conclude("error", {"error": "internal", "detail": _INTERNAL})
            raise
        await self._conclude("result", payload)
        return payload

    async def _conclude(self, type: JobEventType, data: dict[str, Any]) -> None:
        await _conclude(self.state.jobs, self.job_id, type, data)

    async def _execute(self, on_phase: PhaseCallback | None) -> dict[str, Any]:
        began = time.monotonic()
        fragment = self.fragment
        service, owner = self.state.sandboxes, self.access.owner
        clock = RunClock()
        backend = self.state.settings.sandbox_backend
        attributes = {"sandbox.template": fragment.template, "sandbox.backend": backend}
        with tracing.span("sandbox.run", attributes) as run_span:
            # One span per phase the backend reports (acquire, install, start, execute).
            stages = tracing.Stages(run_span, _PHASE_SPANS)
            phases = clock.track(_traced_phases(stages, on_phase))
            try:
                if isinstance(service, JobPublisher):
                    result = await service.execute_job(
                        self.job_id,
                        fragment,
                        owner=owner,
                        restart=self.restart,
                        on_phase=phases,
                        data_files=self.access.data_files,
                    )
                else:
                    result = await service.execute(
                        fragment,
                        owner=owner,
                        restart=self.restart,
                        on_phase=phases,
                        data_files=self.access.data_files,
                    )
            except BaseException as exc:
                stages.close(error=type(exc).__name__)
                if isinstance(exc, Exception):  # a cancelled run is not a failure
                    code = getattr(exc, "code", "internal")
                    run_ended(clock, fragment.template, backend, None, code)
                    self._count("error", began)
                raise
            stages.close()
            run_ended(clock, fragment.template, backend, result)
            outcome = run_outcome(result)
            run_span.set_attribute("sandbox.outcome", outcome)
            with tracing.span("sandbox.persist"):
                seconds = time.monotonic() - began
                await record_sandbox_time(self.db, self.who, fragment.template, seconds)
                payload = result_body(result)
                await save_run(self.db, self.who, self.access, payload)
        self._count(outcome, began)
        return payload

    def _count(self, outcome: RunOutcome, began: float) -> None:
        self.state.analytics.capture(
            "sandbox run",
            self.who.user_id,
            self.who.team_id,
            template=self.fragment.template,
            backend=self.state.settings.sandbox_backend,
            outcome=outcome,
            duration_ms=round((time.monotonic() - began) * 1000),
        )


RunOutcome = Literal["ok", "error", "no_preview"]
_SSE_PHASES = frozenset({"acquiring", "installing", "starting", "running"})
# How much longer than a fleet job's own wait a follower waits for its end.
_FOLLOW_MARGIN_SECONDS = 60.0
_PHASE_SPANS = {
    "acquiring": "sandbox.acquire",
    "installing": "sandbox.install",
    "starting": "sandbox.start",
    "running": "sandbox.execute",
}


def run_outcome(result: InterpreterResult | WebResult) -> RunOutcome:
    """`ok`, `error` (the code raised) or `no_preview` (a web app that could not be served)."""
    if isinstance(result, WebResult):
        return "no_preview" if result.url is None else "ok"
    return "error" if result.error is not None else "ok"


def _traced_phases(stages: tracing.Stages, on_phase: PhaseCallback | None) -> PhaseCallback | None:
    """The phase callback that also opens each phase's span (the caller's, as is, untraced)."""
    if not tracing.enabled():
        return on_phase

    async def phase(name: Phase) -> None:
        stages.enter(name)
        if on_phase is not None:
            await on_phase(name)

    return phase


def _error(code: str, detail: str) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps({"error": code, "detail": detail}), event="error")


async def start_run(request: Request, state: State, who: Principal, body: SandboxRequest) -> Run:
    """Authorise a run (only the owner runs a conversation or stored fragment), check its
    program and count it against the caller's daily limit."""
    db = get_db(request)
    access = await authorize_run(
        db,
        who,
        conversation_id=body.conversation_id or None,
        fragment_id=body.fragment_id or None,
        need_fragment=body.fragment is None,
        with_data=True,
    )
    fragment = body.fragment or access.fragment
    assert fragment is not None
    # Caller mistakes (unknown template, bad paths) are HTTP errors even when streaming.
    prepare_program(fragment)
    # Counted once the run is known to be valid and the caller's: its own daily limit.
    headers: dict[str, str] = {}
    owner = access.owner
    # A run right after its conversation's prepare was counted by that prepare.
    if state.settings.rate_limits:
        credits = state.prepare_credits
        prepaid = owner is not None and await credits.use(owner, fragment.template)
        if not prepaid:
            headers = await enforce_sandbox(request, state.settings, db, who, state.limiter)
    job_id = new_job_id()
    await state.jobs.open(job_id, job_owner(who))
    return Run(state, db, who, access, fragment, body.restart, headers, job_id)


def job_owner(who: Principal) -> JobOwner | None:
    """Who may follow the caller's jobs: the same user acting for the same team; nobody for
    an anonymous caller (no token: nothing to prove it is the same caller again)."""
    return None if who.user_id is None else JobOwner(who.user_id, who.team_id)


@dataclass(frozen=True)
class Prepared:
    """A prepare's answer: the sandbox (None: this backend cannot prepare the template), the
    rate-limit headers, and the job it ran as."""

    sandbox: PreparedSandbox | None
    headers: dict[str, str]
    job_id: str


async def prepare(
    request: Request, state: State, who: Principal, template_id: str, conversation_id: str
) -> Prepared:
    """Take or start the conversation's sandbox for a template (its owner only; 404
    otherwise), counted as a run that the conversation's next run of it then does not repeat.
    It runs as a job detached from the request (a long start outlives it); its result event
    is `{prepared: {sandbox_id, template, url} | null}`."""
    template = get_template(template_id)
    db = get_db(request)
    access = await authorize_run(
        db, who, conversation_id=conversation_id, fragment_id=None, need_fragment=False
    )
    owner = access.owner
    assert owner is not None
    headers: dict[str, str] = {}
    credits = state.prepare_credits if state.settings.rate_limits else None
    # A repeated prepare is free: it answers the sandbox the first one paid for, and grants
    # nothing (the run may spend that credit meanwhile: a second grant would be a free run).
    paying = credits is not None and not await credits.holds(owner, template.id)
    if paying:
        headers = await enforce_sandbox(request, state.settings, db, who, state.limiter)
    job_id = new_job_id()
    board = state.jobs
    await board.open(job_id, job_owner(who))

    async def as_job() -> PreparedSandbox | None:
        service = state.sandboxes
        try:
            if isinstance(service, JobPublisher):
                prepared = await service.prepare_job(job_id, template, owner)
            else:
                prepared = await service.prepare(template, owner)
            if paying and credits is not None:
                await credits.grant(owner, template.id)
        except FragmentsError as exc:
            await _conclude(board, job_id, "error", {"error": exc.code, "detail": exc.detail})
            raise
        except Exception:
            log.exception("sandbox_prepare_failed", job_id=job_id)
            await _conclude(board, job_id, "error", {"error": "internal", "detail": _INTERNAL})
            raise
        public = None
        if prepared is not None:
            public = {
                "sandbox_id": prepared.sandbox_id,
                "template": prepared.template,
                "url": prepared.url,
            }
        await _conclude(board, job_id, "result", {"prepared": public})
        return prepared

    sandbox = await asyncio.shield(board.detach(as_job()))
    return Prepared(sandbox, headers, job_id)


async def _conclude(board: JobBoard, job_id: str, type: JobEventType, data: dict[str, Any]) -> None:
    """A job's last event, unless a node published it already."""
    try:
        if not await board.finished(job_id):
            await board.publish(job_id, type, data)
    except Exception:
        log.warning("sandbox_job_end_not_published", job_id=job_id, exc_info=True)
