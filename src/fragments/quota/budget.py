"""Monthly token budgets of teams: the budget by tier, what the team used this calendar month
(UTC), and when the month resets.

Tiers and an enterprise team's own `limits` belong to the operator (`fragments teams set-tier`;
PATCH /api/teams/{id} refuses them): only an enterprise team's `limits` override the tier's
figures.

Only usage the platform paid for counts: a model call made with the caller's own API key or
server is recorded with `billed_to = "own_key"` and shown in the usage report, never charged.

What a team used is the sum of its usage rows this month. Summing them on every chat request is
a scan that grows with the month, so each instance keeps the sum for
`token_budget_cache_seconds` and adds the usage it records itself at once. The database stays the
one truth across instances: another instance's usage shows here once the kept sum expires, so a
team can overshoot its budget by at most what other instances answer for it in that time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.store.models import BilledTo, UsageRecord


def month_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The current calendar month (UTC): its first instant and the next month's."""
    now = now or datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


async def month_usage(session: AsyncSession, team_id: str, since: datetime) -> int:
    """Tokens (input + output) the platform paid for the team since `since`."""
    total = await session.execute(
        select(
            func.coalesce(func.sum(UsageRecord.input_tokens + UsageRecord.output_tokens), 0)
        ).where(
            UsageRecord.team_id == team_id,
            UsageRecord.created_at >= since,
            UsageRecord.billed_to == "platform",
        )
    )
    return int(total.scalar_one())


@dataclass
class _Entry:
    month: datetime
    used: int
    expires: float


class UsageCache:
    """Each team's tokens this month, kept for `ttl` seconds per instance (see the module)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}

    async def used(self, session: AsyncSession, team_id: str) -> int:
        start, _ = month_bounds()
        entry = self._entries.get(team_id)
        now = time.monotonic()
        if entry is not None and entry.month == start and now < entry.expires:
            return entry.used
        used = await month_usage(session, team_id, start)
        if len(self._entries) > 10_000:
            self._entries.clear()  # bounded: a cold entry costs one query
        self._entries[team_id] = _Entry(start, used, now + self.ttl)
        return used

    def forget(self) -> None:
        """Drop every kept sum: the next check of each team reads the database."""
        self._entries.clear()

    def add(self, team_id: str | None, tokens: int, paid_by: BilledTo = "platform") -> None:
        """Usage this instance just recorded for the team: counted at once (own-key usage is
        never charged, so it is not added)."""
        if paid_by != "platform":
            return
        entry = self._entries.get(team_id or "")
        if entry is not None and entry.month == month_bounds()[0]:
            entry.used += max(0, tokens)
