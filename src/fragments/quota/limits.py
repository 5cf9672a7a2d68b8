"""Tiered daily limits (a rolling 24 hours) on chat requests and sandbox runs, with the `limits`
library.

Chat: guests by IP (10 a day), signed-in users by user id by their team's tier (free 50, pro
200, enterprise 1000 or the team's `limits.chat_per_day`), and beside that the whole team by its
tier (free 150, pro 2000, enterprise 20000 or the team's `limits.team_chat_per_day`): both must
allow a request. A request bringing its own API key or server, or one they saved (PUT
/api/keys), is not charged to the platform quota but to a separate abuse limit (500 a day).
Sandbox runs have their own, looser limit (guests 50, free 200, pro 1000, enterprise 5000 or the
team's `limits.sandbox_per_day`): a run costs a little CPU, an answer costs model tokens.

A guest is anyone without an account, with or without a guest token: a token is free to mint,
so a guest's chats, sandbox runs and tokens are counted by client IP (`http_client_ip`), never
by token, and minting tokens is itself limited by IP (`guest_tokens_per_day`).

Counters live in Redis when `FRAGMENTS_REDIS_URL` is set; while Redis is unreachable an
in-memory limiter per instance takes over, and Redis is tried again a few seconds later (the
one client's outage policy, `fragments.redis_client`).

Token budgets: a team's tokens (input + output) this calendar month against its tier's budget
(or an enterprise team's `limits.monthly_tokens`); over it, 429 `quota_exceeded`. Own-key
requests and guests are not counted against a team budget. See `budget`. Tiers and enterprise
limits are set by the operator (`fragments teams set-tier`), never by the team.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Request
from limits import RateLimitItem, RateLimitItemPerDay
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from sqlalchemy import select

from fragments.config import Settings
from fragments.errors import FragmentsError
from fragments.http_client_ip import client_ip
from fragments.observability import metrics
from fragments.observability.context import note_tier
from fragments.principal import Principal
from fragments.quota.budget import UsageCache
from fragments.quota.guest_budget import guest_budget_refusal
from fragments.quota.tiers import Kind, daily_limit, monthly_budget, team_daily_limit
from fragments.redis_client import RedisOutage, SharedRedis
from fragments.store.db import Database
from fragments.store.errors import DB_DOWN
from fragments.store.models import ProviderKey, Team

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Quota:
    scope: str  # guest, free, pro, enterprise, own-key, or team-<tier> (a whole team's)
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

    def __init__(self, settings: Settings, redis: SharedRedis | None = None) -> None:
        self.settings = settings
        self._memory_storage = MemoryStorage()
        self._memory = MovingWindowRateLimiter(self._memory_storage)
        self._redis: MovingWindowRateLimiter | None = None
        self._redis_storage: Storage | None = None
        self.outage = redis.outage if redis is not None else RedisOutage()
        if redis is not None and settings.redis_url:
            url = settings.redis_url.replace("redis://", "async+redis://", 1)
            # On the app's one connection pool (closed with it), not a client of its own. The
            # storage types its options as scalars, though redis-py takes a pool among them.
            pool: dict[str, Any] = {"connection_pool": redis.pool}
            self._redis_storage = RedisStorage(
                url, implementation="redispy", wrap_exceptions=True, **pool
            )
            self._redis = MovingWindowRateLimiter(self._redis_storage)

    async def check_all(self, quotas: Sequence[Quota]) -> list[Decision]:
        """Count one request against every quota in `quotas`, or against none of them when one
        is full (a request refused by the team's limit must not use up the user's)."""
        limiter = self._redis
        if limiter is not None and self.outage.up():
            try:
                return await self._decide_all(limiter, quotas)
            except StorageError as exc:
                self.outage.failed("rate_limit_redis_down", exc)
        return await self._decide_all(self._memory, quotas)

    @staticmethod
    async def _decide_all(
        limiter: MovingWindowRateLimiter, quotas: Sequence[Quota]
    ) -> list[Decision]:
        keyed: list[tuple[RateLimitItem, str, str]] = [
            (RateLimitItemPerDay(q.limit), q.kind, f"{q.scope}:{q.key}") for q in quotas
        ]
        free = [await limiter.test(item, ns, key) for item, ns, key in keyed]
        if all(free):
            # Tested first, then counted: a concurrent request may take the last place between
            # the two, and then this one is refused (having used up the quotas counted before).
            free = [await limiter.hit(item, ns, key) for item, ns, key in keyed]
        decisions = []
        for (item, ns, key), allowed in zip(keyed, free, strict=True):
            stats = await limiter.get_window_stats(item, ns, key)
            reset = int(stats.reset_time) if stats.reset_time else int(time.time()) + 86400
            decisions.append(Decision(allowed, item.amount, max(0, stats.remaining), reset))
        return decisions

    async def check(self, quota: Quota) -> Decision:
        return (await self.check_all([quota]))[0]

    async def counter_get(self, key: str) -> int:
        """A plain counter (e.g. a guest IP's tokens this month), from Redis or memory."""
        if self._redis_storage is not None and self.outage.up():
            try:
                return int(await self._redis_storage.get(key))
            except StorageError as exc:
                self.outage.failed("rate_limit_redis_down", exc)
        return int(await self._memory_storage.get(key))

    async def counter_add(self, key: str, amount: int, expiry: int) -> int:
        """Add `amount` to a plain counter that expires `expiry` seconds after its first add."""
        if self._redis_storage is not None and self.outage.up():
            try:
                return int(await self._redis_storage.incr(key, expiry, amount))
            except StorageError as exc:
                self.outage.failed("rate_limit_redis_down", exc)
        return int(await self._memory_storage.incr(key, expiry, amount))


def _host(request: Request, settings: Settings) -> str:
    return client_ip(request, settings.trusted_proxies)


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
    usage: UsageCache, db: Database, who: Principal, saved_key_for: str | None
) -> tuple[Team | None, int, bool]:
    """The caller's team, its tokens this month, and whether the caller saved a key for
    provider `saved_key_for` (the chat then uses it: an own-key request), in one short
    transaction."""
    if not who.team_id:
        return None, 0, False
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
            used = await usage.used(session, team.id) if team is not None else 0
            return team, used, False
    except DB_DOWN:
        log.warning("rate_limit_tier_unknown", user_id=who.user_id)
        return None, 0, False


def _guest(who: Principal) -> bool:
    """No account: anonymous, or holding a guest token (counted by IP either way)."""
    return who.anonymous or who.user_id is None or who.is_guest


async def quota_for(
    settings: Settings,
    db: Database,
    who: Principal,
    request: Request,
    own_key: bool,
    usage: UsageCache,
    saved_key_for: str | None = None,
) -> list[Quota]:
    """The quotas one chat request counts against: the caller's first (with the team's monthly
    budget), then, for a signed-in user on the platform's keys, their team's."""
    guest = _guest(who)
    own_owner = _host(request, settings) if guest or who.user_id is None else who.user_id
    own = [Quota("own-key", own_owner, settings.rate_limit_own_key_per_day)]
    if own_key:
        return own
    if who.anonymous:
        return [Quota("guest", _host(request, settings), settings.rate_limit_guest_per_day)]
    assert who.user_id is not None
    team, used, saved = await _team_and_usage(usage, db, who, saved_key_for)
    if saved:
        return own
    if guest:
        # A guest token's team is its own throwaway one: the IP's guest bucket is the limit.
        return [Quota("guest", _host(request, settings), settings.rate_limit_guest_per_day)]
    tier = team.tier if team is not None else "free"
    limit = daily_limit(settings, team, "chat")
    mine = Quota(tier, who.user_id, limit, budget=monthly_budget(settings, team), used=used)
    if team is None:
        # Unknown while the database is down: the user's own limit still holds.
        return [mine]
    return [mine, Quota(f"team-{tier}", team.id, team_daily_limit(settings, team))]


async def sandbox_quota(
    settings: Settings, db: Database, who: Principal, request: Request
) -> Quota:
    if _guest(who) or who.user_id is None:
        return Quota(
            "guest", _host(request, settings), settings.sandbox_limit_guest_per_day, "sandbox"
        )
    team = await _team(db, who)
    tier = team.tier if team is not None else "free"
    return Quota(tier, who.user_id, daily_limit(settings, team, "sandbox"), "sandbox")


async def enforce(
    request: Request,
    settings: Settings,
    db: Database,
    who: Principal,
    limiter: ChatLimiter,
    usage: UsageCache,
    *,
    own_key: bool,
    saved_key_for: str | None = None,
) -> dict[str, str]:
    """The rate-limit headers for this request; 429 with `Retry-After` when over the limit.
    `saved_key_for`: the provider whose saved key the chat will use, if the caller saved one."""
    quotas = await quota_for(settings, db, who, request, own_key, usage, saved_key_for)
    quota = quotas[0]
    # The tier the answer's tokens and cost are counted under in the metrics.
    note_tier(quota.scope.replace("-", "_"))
    if quota.budget is not None and quota.used >= quota.budget:
        metrics.limit_refused("budget")
        raise FragmentsError(
            f"Your team has used {quota.used:,} of its {quota.budget:,} tokens this month; "
            "ask an admin to raise the budget or upgrade the plan, or use your own API key.",
            code="quota_exceeded",
            status_code=429,
        )
    if quota.scope == "guest":
        refusal = await guest_budget_refusal(limiter, settings, quota.key)
        if refusal is not None:
            metrics.limit_refused("budget")
            raise refusal
    return await _hit_all(limiter, quotas, "chat requests")


def guest_ip(request: Request, settings: Settings, who: Principal) -> str | None:
    """The IP whose guest budget pays for this caller's answers; None for an account."""
    return _host(request, settings) if _guest(who) else None


async def enforce_guest_mint(
    request: Request, settings: Settings, limiter: ChatLimiter
) -> dict[str, str]:
    """The limit on guest tokens minted per client IP: its headers; 429 past it."""
    quota = Quota("guest", _host(request, settings), settings.guest_tokens_per_day, "guest_token")
    return await _hit_all(limiter, [quota], "guest sessions")


async def enforce_sandbox(
    request: Request, settings: Settings, db: Database, who: Principal, limiter: ChatLimiter
) -> dict[str, str]:
    """The sandbox-run limit: its headers; 429 with `Retry-After` when over it."""
    quota = await sandbox_quota(settings, db, who, request)
    return await _hit_all(limiter, [quota], "sandbox runs")


async def _hit_all(limiter: ChatLimiter, quotas: Sequence[Quota], what: str) -> dict[str, str]:
    """Count the request against every quota; the headers are the tightest quota's, and a 429
    names the one that is full."""
    decisions = await limiter.check_all(quotas)
    for quota, decision in zip(quotas, decisions, strict=True):
        if not decision.allowed:
            raise _refusal(quota, decision, what)
    tightest = min(decisions, key=lambda d: d.remaining)
    return tightest.headers()


_REFUSAL_KINDS = {"chat": "rate_limit", "sandbox": "sandbox_limit", "guest_token": "guest_tokens"}


def _refusal(quota: Quota, decision: Decision, what: str) -> FragmentsError:
    metrics.limit_refused(_REFUSAL_KINDS.get(quota.kind, "rate_limit"))
    wait = max(1, decision.reset - int(time.time()))
    hours = max(1, round(wait / 3600))
    later = f"Try again in about {hours} hour{'s' if hours != 1 else ''}"
    if quota.scope.startswith("team-"):
        sentence = (
            f"Your team can make {quota.limit} {what} a day across all its members, and it has "
            f"reached that limit. {later}, or ask an admin about a larger plan."
        )
    elif quota.kind == "guest_token":
        sentence = (
            f"One address can start {quota.limit} {what} a day, and yours has reached that "
            f"limit. {later}, or sign up."
        )
    elif quota.scope == "guest":
        sentence = (
            f"Guests can make {quota.limit} {what} a day; you have reached the limit. "
            f"{later}, or sign in for more."
        )
    else:
        sentence = (
            f"Your plan can make {quota.limit} {what} a day; you have reached the limit. {later}."
        )
    return FragmentsError(
        sentence,
        code="rate_limited",
        status_code=429,
        headers={**decision.headers(), "Retry-After": str(wait)},
    )
