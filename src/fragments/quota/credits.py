"""Prepared runs already paid for: a `POST /api/sandbox/prepare` that took or started a
conversation's sandbox counts as one of the caller's sandbox runs, and the fragment's run that
follows it in the same conversation (same template) is then not counted again. So preparing
never gets a sandbox for free, and preparing then running costs what running alone costs.

Where the credit lives: in Redis when `FRAGMENTS_REDIS_URL` is set (one key per conversation's
sandbox, holding the template, expiring with the sandbox's lifetime), so every app process sees
it and it survives a restart; it is taken with GETDEL, so of two concurrent runs only one uses
it. Without Redis, and while Redis is unreachable (the one client's `RedisOutage`: memory, Redis
tried again a few seconds later), in this process's memory: a run then landing on another
process is counted again (the caller pays twice, never zero times)."""

from __future__ import annotations

import time
from collections import OrderedDict

from redis.asyncio import Redis

from fragments.redis_client import RedisOutage, SharedRedis

# Owners remembered at most in memory; the oldest credit is dropped first (its run is counted).
_MAX_CREDITS = 10_000
# Keys in Redis: this prefix, then the owner (`<user or anonymous>:<conversation id>`).
KEY_PREFIX = "fragments:prepare-credit:"


class PrepareCredits:
    """One credit per owner (a conversation's sandbox key), for the template it prepared, in
    this process's memory; a credit older than `ttl` seconds (the sandbox is gone) is void."""

    def __init__(self, limit: int = _MAX_CREDITS, ttl: float | None = None) -> None:
        self._limit = limit
        self._ttl = ttl
        self._credits: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def _live(self, entry: tuple[str, float] | None) -> str | None:
        if entry is None:
            return None
        template_id, granted = entry
        if self._ttl is not None and time.monotonic() - granted > self._ttl:
            return None
        return template_id

    def holds(self, owner: str, template_id: str) -> bool:
        """True when this owner's prepare for this template is paid and not yet used."""
        return self._live(self._credits.get(owner)) == template_id

    def grant(self, owner: str, template_id: str) -> None:
        self._credits[owner] = (template_id, time.monotonic())
        self._credits.move_to_end(owner)
        while len(self._credits) > self._limit:
            self._credits.popitem(last=False)

    def use(self, owner: str, template_id: str) -> bool:
        """Spend the owner's credit for a run of `template_id`; False when there is none. A
        credit for another template is dropped: that run replaces the prepared sandbox."""
        return self._live(self._credits.pop(owner, None)) == template_id


class SharedPrepareCredits:
    """The credits in Redis (shared by every app process), in memory when there is no Redis or
    while it is down. Same meaning as `PrepareCredits`, asynchronous."""

    def __init__(self, redis: SharedRedis | None, ttl: float, *, prefix: str = KEY_PREFIX) -> None:
        self._redis = redis
        self._ttl_ms = max(1, int(ttl * 1000))
        self._prefix = prefix
        self._outage = redis.outage if redis is not None else RedisOutage()
        self.memory = PrepareCredits(ttl=ttl)

    @property
    def outage(self) -> RedisOutage:
        return self._outage

    def _client(self) -> Redis | None:
        return self._redis.available() if self._redis is not None else None

    async def holds(self, owner: str, template_id: str) -> bool:
        redis = self._client()
        if redis is not None:
            try:
                if await redis.get(self._prefix + owner) == template_id:
                    return True
            except Exception as exc:  # any Redis failure: memory answers, as for the limiter
                self._outage.failed("prepare_credit_redis_down", exc)
        return self.memory.holds(owner, template_id)

    async def grant(self, owner: str, template_id: str) -> None:
        redis = self._client()
        if redis is not None:
            try:
                await redis.set(self._prefix + owner, template_id, px=self._ttl_ms)
                return
            except Exception as exc:
                self._outage.failed("prepare_credit_redis_down", exc)
        self.memory.grant(owner, template_id)

    async def use(self, owner: str, template_id: str) -> bool:
        """Spend the owner's credit (atomically in Redis: GETDEL, so one run only gets it). A
        credit this process kept in memory while Redis was down is spent too."""
        in_memory = self.memory.use(owner, template_id)
        redis = self._client()
        if redis is not None:
            try:
                held = await redis.getdel(self._prefix + owner)
                return held == template_id or in_memory
            except Exception as exc:
                self._outage.failed("prepare_credit_redis_down", exc)
        return in_memory
