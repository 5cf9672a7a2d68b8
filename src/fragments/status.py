"""`GET /api/status`: the health of what the app depends on, for anyone (no secrets).

The providers' last health checks (`llm/health.py`: status, latency, when; never a key, a URL or
an error text), every circuit breaker's state, and the sandbox backend: down while its creation
breaker is open or its readiness check fails, degraded while the breaker is half-open. An API
process of a fleet adds the fleet's counts: live sandbox nodes and the jobs on its queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import structlog
from fastapi import APIRouter
from pydantic import BaseModel

from fragments.jobs.stats import FleetSummary
from fragments.resilience import BreakerState
from fragments.state import StateDep

log = structlog.get_logger(__name__)

router = APIRouter()

SandboxHealth = Literal["up", "degraded", "down"]


class ProviderHealthPublic(BaseModel):
    provider: str
    status: Literal["up", "degraded", "down"]
    latency_ms: int | None
    checked_at: str


class BreakerPublic(BaseModel):
    name: str
    state: BreakerState


class SandboxHealthPublic(BaseModel):
    backend: str
    status: SandboxHealth


class FleetPublic(BaseModel):
    nodes: int
    queued_jobs: int
    oldest_job_seconds: float


class StatusPublic(BaseModel):
    """Providers with a platform key (those checked at least once), breakers, the sandbox
    backend, and the fleet (null where the app runs its own sandboxes, or Redis is down)."""

    providers: list[ProviderHealthPublic]
    breakers: list[BreakerPublic]
    sandbox: SandboxHealthPublic
    fleet: FleetPublic | None = None


@router.get("/api/status", response_model=StatusPublic)
async def status(state: StateDep) -> StatusPublic:
    """The app's dependencies as every instance sees them."""
    backend = state.settings.sandbox_backend
    breakers = await state.breakers.snapshot()
    sandbox_breaker = next(
        (b["state"] for b in breakers if b["name"] == f"sandbox:{backend}"), None
    )
    sandbox: SandboxHealth = "up"
    if sandbox_breaker == "open":
        sandbox = "down"
    else:
        try:
            await state.sandboxes.check()
        except Exception:  # the reason is for /readyz and the logs, not for the public
            sandbox = "down"
        else:
            sandbox = "degraded" if sandbox_breaker == "half_open" else "up"
    return StatusPublic(
        fleet=await _fleet(getattr(state.sandboxes, "fleet_summary", None)),
        providers=[
            ProviderHealthPublic(
                provider=p.provider,
                status=p.status,
                latency_ms=p.latency_ms,
                checked_at=p.checked_at,
            )
            for p in await state.health.all()
        ],
        breakers=[BreakerPublic(name=b["name"], state=b["state"]) for b in breakers],
        sandbox=SandboxHealthPublic(backend=backend, status=sandbox),
    )


async def _fleet(read: Callable[[], Awaitable[FleetSummary]] | None) -> FleetPublic | None:
    """The fleet's counts (FleetSandboxService only); None when there is no fleet or Redis does
    not answer (the sandbox's status already says down then)."""
    if read is None:
        return None
    try:
        found = await read()
    except Exception:
        log.warning("status_fleet_failed", exc_info=True)
        return None
    return FleetPublic(
        nodes=found.nodes,
        queued_jobs=found.queued_jobs,
        oldest_job_seconds=found.oldest_job_seconds,
    )
