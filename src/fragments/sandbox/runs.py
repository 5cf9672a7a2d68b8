"""Running a fragment for a caller and preparing a conversation's sandbox: authorise, count,
run, record the time, store the result. The router parses and answers with what these build."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from fastapi import Request
from sse_starlette import ServerSentEvent

from fragments.errors import FragmentsError
from fragments.observability import tracing
from fragments.principal import Principal
from fragments.quota.limits import enforce_sandbox
from fragments.sandbox.access import RunAccess, authorize_run, save_run
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
    """A run that passed its checks and was counted: run it with `result` or `events`."""

    state: State
    db: Database
    who: Principal
    access: RunAccess
    fragment: Fragment
    restart: bool
    headers: dict[str, str]

    async def result(self) -> dict[str, Any]:
        """Run it and answer the result's JSON, stored with its fragment."""
        return await self._execute(None)

    async def events(self) -> AsyncIterator[ServerSentEvent]:
        """Run it as `phase` events, then `result` (or `error`)."""
        queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue()

        async def on_phase(phase: Phase) -> None:
            await queue.put(ServerSentEvent(data=json.dumps({"phase": phase}), event="phase"))

        async def run() -> None:
            try:
                event = ServerSentEvent(
                    data=json.dumps(await self._execute(on_phase)), event="result"
                )
            except FragmentsError as exc:
                event = _error(exc.code, exc.detail)
            except Exception:
                log.exception("sandbox_run_failed")
                event = _error("internal", _INTERNAL)
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
    return Run(state, db, who, access, fragment, body.restart, headers)


async def prepare(
    request: Request, state: State, who: Principal, template_id: str, conversation_id: str
) -> tuple[PreparedSandbox | None, dict[str, str]]:
    """Take or start the conversation's sandbox for a template (its owner only; 404
    otherwise), counted as a run that the conversation's next run of it then does not repeat.
    None when the backend cannot prepare the template; with the rate-limit headers."""
    template = get_template(template_id)
    db = get_db(request)
    access = await authorize_run(
        db, who, conversation_id=conversation_id, fragment_id=None, need_fragment=False
    )
    assert access.owner is not None
    headers: dict[str, str] = {}
    credits = state.prepare_credits if state.settings.rate_limits else None
    # A repeated prepare is free: it answers the sandbox the first one paid for, and grants
    # nothing (the run may spend that credit meanwhile: a second grant would be a free run).
    paying = credits is not None and not await credits.holds(access.owner, template.id)
    if paying:
        headers = await enforce_sandbox(request, state.settings, db, who, state.limiter)
    prepared = await state.sandboxes.prepare(template, access.owner)
    if paying and credits is not None:
        await credits.grant(access.owner, template.id)
    return prepared, headers
