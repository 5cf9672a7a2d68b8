"""What one sandbox run adds to the metrics and the log: its phase times and outcome."""

from __future__ import annotations

import time
from typing import Any

import structlog

from fragments.observability import metrics
from fragments.sandbox.service import Phase, PhaseCallback
from fragments.schemas import InterpreterResult, WebResult

log = structlog.get_logger("fragments.sandbox.run")


class RunClock:
    """The times a run's phases began, fed by the backend's phase callback (`track`)."""

    __slots__ = ("began", "phases")

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.phases: list[tuple[Phase, float]] = []

    def track(self, forward: PhaseCallback | None) -> PhaseCallback:
        """A phase callback that notes each phase's start, then calls `forward` if any."""

        async def on_phase(phase: Phase) -> None:
            self.phases.append((phase, time.monotonic()))
            if forward is not None:
                await forward(phase)

        return on_phase

    def ready_at(self) -> float | None:
        """When the sandbox was ready: the start of the first phase after `acquiring`."""
        return next((at for phase, at in self.phases if phase != "acquiring"), None)

    def phase_ms(self, ended: float) -> dict[str, float]:
        """Each phase's duration in milliseconds (until the next phase, or the end)."""
        out: dict[str, float] = {}
        for index, (phase, at) in enumerate(self.phases):
            until = self.phases[index + 1][1] if index + 1 < len(self.phases) else ended
            out[f"{phase}_ms"] = round((until - at) * 1000, 1)
        return out


def outcome_of(result: InterpreterResult | WebResult | None) -> str:
    """ok, error (the run raised), or no_preview (no sandbox could serve it)."""
    if result is None:
        return "error"
    if result.sandbox_id is None:
        return "no_preview"
    return "ok"


def run_ended(
    clock: RunClock,
    template: str,
    backend: str,
    result: InterpreterResult | WebResult | None,
    error: str | None = None,
) -> None:
    """Record a run's metrics and its `sandbox_run` log line."""
    ended = time.monotonic()
    ready = clock.ready_at()
    outcome = outcome_of(result)
    create = ready - clock.began if ready is not None else None
    run = ended - (ready if ready is not None else clock.began)
    metrics.sandbox_run(template, backend, outcome=outcome, create_seconds=create, run_seconds=run)
    fields: dict[str, Any] = clock.phase_ms(ended)
    log.info(
        "sandbox_run",
        template=template,
        backend=backend,
        outcome=outcome,
        sandbox_id=result.sandbox_id if result is not None else None,
        create_ms=round(create * 1000, 1) if create is not None else None,
        run_ms=round(run * 1000, 1),
        error=error,
        **fields,
    )
