"""Tiered daily limits on chat requests (a rolling 24 hours), with the `limits` library.

Guests by IP (10 a day), signed-in users by user id by their team's tier (free 50, pro 200,
enterprise as set in the team's `limits.chat_per_day`). A request bringing its own API key or
server is not charged to the platform quota but to a separate abuse limit (500 a day). Counters
live in Redis when `FRAGMENTS_REDIS_URL` is set; while Redis is unreachable an in-memory limiter
per instance takes over, and Redis is tried again every `_RETRY_SECONDS`.

Token budgets: a team's tokens (input + output) this calendar month against its tier's budget
(or the team's `limits.monthly_tokens`); over it, 429 `quota_exceeded`. Own-key requests and
guests are not counted against a team budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from fastapi import Request
from limits import RateLimitItem, RateLimitItemPerDay
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from sqlalchemy import func, select

from fragments.auth.deps import DB_DOWN, Principal
from fragments.config import Settings
from fragments.errors import FragmentsError
from fragments.store.db import Database
from fragments.store.models import Team, UsageRecord

log = structlog.get_logger(__name__)

_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Quota:
    scope: str  # guest, free, pro, enterprise, own-key
    key: str
    limit: int
    # The team's monthly token budget and what it has used this calendar month (UTC).
    budget: int | None = None
    used: int = 0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # epoch seconds when a request is free again

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class ChatLimiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis: MovingWindowRateLimiter | None = None
        self._redis_storage: Storage | None = None
        self._down_until = 0.0
        if settings.redis_url:
            url = settings.redis_url.replace("redis://", "async+redis://", 1)
            self._redis_storage = RedisStorage(url, implementation="redispy", wrap_exceptions=True)
            self._redis = MovingWindowRateLimiter(self._redis_storage)

    async def _limiter_call(self, item: RateLimitItem, key: str) -> Decision:
        limiter = self._redis
        if limiter is not None and time.monotonic() >= self._down_until:
            try:
                return await self._decide(limiter, item, key)
            except StorageError as exc:
                self._down_until = time.monotonic() + _RETRY_SECONDS
                log.warning("rate_limit_redis_down", error=repr(exc))
        return await self._decide(self._memory, item, key)

    @staticmethod
    async def _decide(limiter: MovingWindowRateLimiter, item: RateLimitItem, key: str) -> Decision:
        allowed = await limiter.hit(item, "chat", key)
        stats = await limiter.get_window_stats(item, "chat", key)
        reset = int(stats.reset_time) if stats.reset_time else int(time.time()) + 86400
        return Decision(allowed, item.amount, max(0, stats.remaining), reset)

    async def check(self, quota: Quota) -> Decision:
        item = RateLimitItemPerDay(quota.limit)
        return await self._limiter_call(item, f"{quota.scope}:{quota.key}")


async def quota_for(
    settings: Settings, db: Database, who: Principal, request: Request, own_key: bool
) -> Quota:
    if own_key:
        key = who.user_id or (request.client.host if request.client else "unknown")
        return Quota("own-key", key, settings.rate_limit_own_key_per_day)
    if who.anonymous or who.user_id is None:
        host = request.client.host if request.client else "unknown"
        return Quota("guest", host, settings.rate_limit_guest_per_day)
    tier, custom, custom_budget, used = "free", None, None, 0
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    try:
        async with db.transaction(who.identity) as session:
            team = await session.get(Team, who.team_id) if who.team_id else None
            if team is not None:
                tier = team.tier
                value = (team.limits or {}).get("chat_per_day")
                custom = int(value) if isinstance(value, int) else None
                value = (team.limits or {}).get("monthly_tokens")
                custom_budget = int(value) if isinstance(value, int) else None
                total = await session.execute(
                    select(
                        func.coalesce(
                            func.sum(UsageRecord.input_tokens + UsageRecord.output_tokens), 0
                        )
                    ).where(UsageRecord.team_id == team.id, UsageRecord.created_at >= month_start)
                )
                used = int(total.scalar_one())
    except DB_DOWN:
        log.warning("rate_limit_tier_unknown", user_id=who.user_id)
    budgets = {
        "free": settings.token_budget_free,
        "pro": settings.token_budget_pro,
        "enterprise": settings.token_budget_enterprise,
    }
    budget = custom_budget if custom_budget is not None else budgets.get(tier)
    limits = {
        "free": settings.rate_limit_free_per_day,
        "pro": settings.rate_limit_pro_per_day,
        "enterprise": settings.rate_limit_enterprise_per_day,
    }
    limit = custom if custom is not None else limits.get(tier, settings.rate_limit_free_per_day)
    return Quota(tier, who.user_id, limit, budget, used)


def limiter_of(request: Request, settings: Settings) -> ChatLimiter:
    state = request.app.state
    limiter: ChatLimiter | None = getattr(state, "chat_limiter", None)
    if limiter is None:
        limiter = ChatLimiter(settings)
        state.chat_limiter = limiter
    return limiter


async def enforce(
    request: Request, settings: Settings, db: Database, who: Principal, *, own_key: bool
) -> dict[str, str]:
    """The rate-limit headers for this request; 429 with `Retry-After` when over the limit."""
    quota = await quota_for(settings, db, who, request, own_key)
    if quota.budget is not None and quota.used >= quota.budget:
        raise FragmentsError(
            f"Your team has used {quota.used:,} of its {quota.budget:,} tokens this month; "
            "ask an admin to raise the budget or upgrade the plan, or use your own API key.",
            code="quota_exceeded",
            status_code=429,
        )
    decision = await limiter_of(request, settings).check(quota)
    headers = decision.headers()
    if not decision.allowed:
        wait = max(1, decision.reset - int(time.time()))
        hours = max(1, round(wait / 3600))
        who_text = "Guests" if quota.scope == "guest" else "Your plan"
        raise FragmentsError(
            f"{who_text} can send {quota.limit} chat requests a day; you have reached the "
            f"limit. Try again in about {hours} hour{'s' if hours != 1 else ''}"
            + (", or sign in for more." if quota.scope == "guest" else "."),
            code="rate_limited",
            status_code=429,
            headers={**headers, "Retry-After": str(wait)},
        )
    return headers
