"""Tiered daily limits (a rolling 24 hours) on chat requests and sandbox runs, with the `limits`
library.

Chat: guests by IP (10 a day), signed-in users by user id by their team's tier (free 50, pro
200, enterprise 1000 or the team's `limits.chat_per_day`). A request bringing its own API key or
server, or one they saved (PUT /api/keys), is not charged to the platform quota but to a
separate abuse limit (500 a day).
Sandbox runs have their own, looser limit (guests 50, free 200, pro 1000, enterprise 5000 or the
team's `limits.sandbox_per_day`): a run costs a little CPU, an answer costs model tokens.
Counters live in Redis when `FRAGMENTS_REDIS_URL` is set; while Redis is unreachable an
in-memory limiter per instance takes over, and Redis is tried again every `_RETRY_SECONDS`.

Token budgets: a team's tokens (input + output) this calendar month against its tier's budget
(or an enterprise team's `limits.monthly_tokens`); over it, 429 `quota_exceeded`. Own-key
requests and guests are not counted against a team budget. See `budget`. Tiers and enterprise
limits are set by the operator (`fragments teams set-tier`), never by the team.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from fastapi import Request
from limits import RateLimitItem, RateLimitItemPerDay
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from sqlalchemy import select

from fragments.auth.deps import DB_DOWN, Principal
from fragments.chat.budget import monthly_budget, override, usage_cache
from fragments.config import Settings
from fragments.errors import FragmentsError
from fragments.store.db import Database
from fragments.store.models import ProviderKey, Team

log = structlog.get_logger(__name__)

_RETRY_SECONDS = 5.0


Kind = Literal["chat", "sandbox"]


class RedisOutage:
    """Whether Redis is worth trying: after a failure, callers use their in-memory fallback
    for `retry_seconds`, then try Redis again (one failed call costs a connect timeout, so the
    fallback must not pay it on every request). Shared by the limiter and the prepare credits."""

    def __init__(self, retry_seconds: float = _RETRY_SECONDS) -> None:
        self.retry_seconds = retry_seconds
        self.down_until = 0.0

    def up(self) -> bool:
        return time.monotonic() >= self.down_until

    def failed(self, event: str, exc: BaseException) -> None:
        self.down_until = time.monotonic() + self.retry_seconds
        log.warning(event, error=repr(exc))


@dataclass(frozen=True)
class Quota:
    scope: str  # guest, free, pro, enterprise, own-key
    key: str
    limit: int
    kind: Kind = "chat"
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
    """Rolling-day counters for chat requests and sandbox runs (kept apart by `Quota.kind`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis: MovingWindowRateLimiter | None = None
        self._redis_storage: Storage | None = None
        self.outage = RedisOutage()
        if settings.redis_url:
            url = settings.redis_url.replace("redis://", "async+redis://", 1)
            self._redis_storage = RedisStorage(url, implementation="redispy", wrap_exceptions=True)
            self._redis = MovingWindowRateLimiter(self._redis_storage)

    async def _limiter_call(self, item: RateLimitItem, namespace: str, key: str) -> Decision:
        limiter = self._redis
        if limiter is not None and self.outage.up():
            try:
                return await self._decide(limiter, item, namespace, key)
            except StorageError as exc:
                self.outage.failed("rate_limit_redis_down", exc)
        return await self._decide(self._memory, item, namespace, key)

    @staticmethod
    async def _decide(
        limiter: MovingWindowRateLimiter, item: RateLimitItem, namespace: str, key: str
    ) -> Decision:
        allowed = await limiter.hit(item, namespace, key)
        stats = await limiter.get_window_stats(item, namespace, key)
        reset = int(stats.reset_time) if stats.reset_time else int(time.time()) + 86400
        return Decision(allowed, item.amount, max(0, stats.remaining), reset)

    async def check(self, quota: Quota) -> Decision:
        item = RateLimitItemPerDay(quota.limit)
        return await self._limiter_call(item, quota.kind, f"{quota.scope}:{quota.key}")

    async def aclose(self) -> None:
        """Close the Redis connection pool (at shutdown)."""
        storage = self._redis_storage
        if storage is None:
            return
        client = getattr(getattr(storage, "bridge", None), "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception as exc:  # closing at shutdown must not fail it
                log.warning("rate_limit_redis_close_failed", error=repr(exc))


def _host(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _team(db: Database, who: Principal) -> Team | None:
    """The caller's current team (None while the database is down: the free tier applies)."""
    if not who.team_id:
        return None
    try:
        async with db.transaction(who.identity) as session:
            return await session.get(Team, who.team_id)
    except DB_DOWN:
        log.warning("rate_limit_tier_unknown", user_id=who.user_id)
        return None


async def _team_and_usage(
    request: Request, settings: Settings, db: Database, who: Principal, saved_key_for: str | None
) -> tuple[Team | None, int, bool]:
    """The caller's team, its tokens this month, and whether the caller saved a key for
    provider `saved_key_for` (the chat then uses it: an own-key request), in one short
    transaction."""
    if not who.team_id:
        return None, 0, False
    cache = usage_cache(request.app.state, settings)
    try:
        async with db.transaction(who.identity) as session:
            if saved_key_for is not None:
                saved = await session.execute(
                    select(ProviderKey.id).where(
                        ProviderKey.user_id == who.user_id, ProviderKey.provider == saved_key_for
                    )
                )
                if saved.first() is not None:
                    return None, 0, True
            team = await session.get(Team, who.team_id)
            used = await cache.used(session, team.id) if team is not None else 0
            return team, used, False
    except DB_DOWN:
        log.warning("rate_limit_tier_unknown", user_id=who.user_id)
        return None, 0, False


def daily_limit(settings: Settings, team: Team | None, kind: Kind) -> int:
    """A signed-in user's requests (`chat`) or sandbox runs a day: the team's tier's figure, or
    an enterprise team's own `limits.chat_per_day` / `limits.sandbox_per_day`."""
    if kind == "chat":
        limits = {
            "free": settings.rate_limit_free_per_day,
            "pro": settings.rate_limit_pro_per_day,
            "enterprise": settings.rate_limit_enterprise_per_day,
        }
    else:
        limits = {
            "free": settings.sandbox_limit_free_per_day,
            "pro": settings.sandbox_limit_pro_per_day,
            "enterprise": settings.sandbox_limit_enterprise_per_day,
        }
    custom = override(team, f"{kind}_per_day")
    if custom is not None:
        return custom
    return limits.get(team.tier if team is not None else "free", limits["free"])


async def quota_for(
    settings: Settings,
    db: Database,
    who: Principal,
    request: Request,
    own_key: bool,
    saved_key_for: str | None = None,
) -> Quota:
    own = Quota("own-key", who.user_id or _host(request), settings.rate_limit_own_key_per_day)
    if own_key:
        return own
    if who.anonymous or who.user_id is None:
        return Quota("guest", _host(request), settings.rate_limit_guest_per_day)
    team, used, saved = await _team_and_usage(request, settings, db, who, saved_key_for)
    if saved:
        return own
    tier = team.tier if team is not None else "free"
    limit = daily_limit(settings, team, "chat")
    return Quota(tier, who.user_id, limit, budget=monthly_budget(settings, team), used=used)


async def sandbox_quota(
    settings: Settings, db: Database, who: Principal, request: Request
) -> Quota:
    if who.anonymous or who.user_id is None:
        return Quota("guest", _host(request), settings.sandbox_limit_guest_per_day, "sandbox")
    team = await _team(db, who)
    tier = team.tier if team is not None else "free"
    return Quota(tier, who.user_id, daily_limit(settings, team, "sandbox"), "sandbox")


def limiter_of(request: Request, settings: Settings) -> ChatLimiter:
    state = request.app.state
    limiter: ChatLimiter | None = getattr(state, "chat_limiter", None)
    if limiter is None:
        limiter = ChatLimiter(settings)
        state.chat_limiter = limiter
    return limiter


async def enforce(
    request: Request,
    settings: Settings,
    db: Database,
    who: Principal,
    *,
    own_key: bool,
    saved_key_for: str | None = None,
) -> dict[str, str]:
    """The rate-limit headers for this request; 429 with `Retry-After` when over the limit.
    `saved_key_for`: the provider whose saved key the chat will use, if the caller saved one."""
    quota = await quota_for(settings, db, who, request, own_key, saved_key_for)
    if quota.budget is not None and quota.used >= quota.budget:
        raise FragmentsError(
            f"Your team has used {quota.used:,} of its {quota.budget:,} tokens this month; "
            "ask an admin to raise the budget or upgrade the plan, or use your own API key.",
            code="quota_exceeded",
            status_code=429,
        )
    return await _hit(request, settings, quota, "chat requests")


async def enforce_sandbox(
    request: Request, settings: Settings, db: Database, who: Principal
) -> dict[str, str]:
    """The sandbox-run limit: its headers; 429 with `Retry-After` when over it."""
    quota = await sandbox_quota(settings, db, who, request)
    return await _hit(request, settings, quota, "sandbox runs")


async def _hit(request: Request, settings: Settings, quota: Quota, what: str) -> dict[str, str]:
    decision = await limiter_of(request, settings).check(quota)
    headers = decision.headers()
    if not decision.allowed:
        wait = max(1, decision.reset - int(time.time()))
        hours = max(1, round(wait / 3600))
        who_text = "Guests" if quota.scope == "guest" else "Your plan"
        raise FragmentsError(
            f"{who_text} can make {quota.limit} {what} a day; you have reached the "
            f"limit. Try again in about {hours} hour{'s' if hours != 1 else ''}"
            + (", or sign in for more." if quota.scope == "guest" else "."),
            code="rate_limited",
            status_code=429,
            headers={**headers, "Retry-After": str(wait)},
        )
    return headers


async def close_clients(app_state: Any) -> None:
    """Close the Redis clients the chat layer opened (limiter, response cache) and the sandbox
    router's prepare credits, at shutdown."""
    limiter: ChatLimiter | None = getattr(app_state, "chat_limiter", None)
    if limiter is not None:
        await limiter.aclose()
    credits = getattr(app_state, "prepare_credits", None)
    close_credits = getattr(credits, "aclose", None)
    if close_credits is not None:
        await close_credits()
    store = getattr(app_state, "response_cache_store", None)
    close = getattr(store, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception as exc:  # closing at shutdown must not fail it
            log.warning("response_cache_close_failed", error=repr(exc))
