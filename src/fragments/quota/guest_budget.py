"""Guests' monthly token budget, counted per client IP.

A guest (no account, with or without a guest token) can mint a new token whenever it likes, and
an anonymous guest stores nothing, so the only key a guest cannot reset is its IP. The tokens
(input + output) the platform paid for answering guests from one IP are summed for the calendar
month (UTC) in the rate limiter's storage (Redis when configured, else this instance's memory),
in a counter that expires once the month is over. Checked before an answer, added after it, so a
guest can overshoot by at most the answers it has in flight.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from fragments.config import Settings
from fragments.errors import FragmentsError
from fragments.quota.budget import month_bounds

# Kept a day past the month's end so a clock a little behind never reads a reset counter early.
_GRACE_SECONDS = 86_400


class Counters(Protocol):
    """Plain counters with an expiry (the rate limiter's storage)."""

    async def counter_get(self, key: str) -> int: ...

    async def counter_add(self, key: str, amount: int, expiry: int) -> int: ...


def _key(ip: str, now: datetime | None = None) -> str:
    start, _ = month_bounds(now)
    return f"guest-tokens/{start:%Y-%m}/{ip}"


def _seconds_left(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    _, end = month_bounds(now)
    return max(1, int((end - now).total_seconds()))


async def guest_tokens_used(counters: Counters, ip: str) -> int:
    """Tokens answered for guests from `ip` this calendar month."""
    return await counters.counter_get(_key(ip))


async def record_guest_tokens(counters: Counters, ip: str, tokens: int) -> None:
    """Count an answer's tokens against the guests of `ip`."""
    if tokens > 0:
        await counters.counter_add(_key(ip), tokens, _seconds_left() + _GRACE_SECONDS)


async def guest_budget_refusal(
    counters: Counters, settings: Settings, ip: str
) -> FragmentsError | None:
    """The 429 to answer when the guests of `ip` have used their month's tokens, else None."""
    used = await guest_tokens_used(counters, ip)
    budget = settings.token_budget_guest
    if used < budget:
        return None
    wait = _seconds_left()
    return FragmentsError(
        f"Guests from your address have used {used:,} of their {budget:,} tokens this month; "
        "sign up for more, or use your own API key.",
        code="quota_exceeded",
        status_code=429,
        headers={"Retry-After": str(wait)},
    )
