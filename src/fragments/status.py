"""`GET /api/status`: the health of what the app depends on, for anyone (no secrets).

The providers' last health checks (`llm/health.py`: status, latency, when; never a key, a URL or
an error text), every circuit breaker's state, and the sandbox backend: down while its creation
breaker is open or its readiness check fails, degraded while the breaker is half-open.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from fragments.resilience import BreakerState
from fragments.state import StateDep

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


class StatusPublic(BaseModel):
    """Providers with a platform key (those checked at least once), breakers, the sandbox
    backend."""

    providers: list[ProviderHealthPublic]
    breakers: list[BreakerPublic]
    sandbox: SandboxHealthPublic


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
