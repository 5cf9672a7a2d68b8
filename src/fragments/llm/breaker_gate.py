"""The failover chain's gate over the providers' circuit breakers (`resilience.py`) and their
health checks: a provider whose breaker is open (or half-open with its one probe taken), or whose
last health check says `down`, is skipped; every attempt's outcome is counted in its breaker."""

from __future__ import annotations

import uuid
from typing import Protocol

from fragments.llm.failover import GateTicket
from fragments.resilience import BreakerOpen, BreakerRegistry, CircuitBreaker, Permit


class ProviderHealth(Protocol):
    """A provider's last health check (`up`, `degraded` or `down`)."""

    @property
    def status(self) -> str: ...


class HealthSource(Protocol):
    """Where the providers' health checks are kept (shared by every instance)."""

    async def status(self, provider_id: str) -> ProviderHealth | None:
        """The provider's last known health; None when it was never checked."""
        ...


def breaker_name(provider_id: str) -> str:
    """The breaker of a provider, as `GET /api/status` lists it."""
    return f"provider:{provider_id}"


class _BreakerTicket:
    __slots__ = ("breaker", "permit")

    def __init__(self, breaker: CircuitBreaker, permit: Permit) -> None:
        self.breaker = breaker
        self.permit = permit

    async def record(self, ok: bool, reason: str | None) -> None:
        if ok:
            await self.breaker.record_success(self.permit)
        else:
            await self.breaker.record_failure(self.permit)

    async def release(self) -> None:
        await self.breaker.release(self.permit)


class BreakerGate:
    """A `ProviderGate` over one breaker per provider and, when given, the health checks."""

    def __init__(self, breakers: BreakerRegistry, health: HealthSource | None = None) -> None:
        self.breakers = breakers
        self.health = health

    async def admit(self, provider_id: str, *, force: bool) -> GateTicket | None:
        if not force and self.health is not None:
            checked = await self.health.status(provider_id)
            if checked is not None and checked.status == "down":
                return None
        breaker = self.breakers.breaker(breaker_name(provider_id))
        try:
            permit = await breaker.allow()
        except BreakerOpen:
            if not force:
                return None
            # The last model left is tried anyway; its outcome counts as an ordinary call's
            # (only a probe's outcome moves an open breaker).
            permit = Permit(probe=False, shared=True, token=uuid.uuid4().hex)
        return _BreakerTicket(breaker, permit)
