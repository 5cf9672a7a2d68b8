"""The app's one Redis client and its one outage policy.

Built once in the lifespan (`State.redis`, None when `FRAGMENTS_REDIS_URL` is unset) and shared by
the rate limiter, budgets, prepare credits, the response cache and short links; closed once at
shutdown. Short timeouts: an unreachable Redis must cost a request little before the caller's
in-memory fallback answers. After a failure every caller uses its fallback for `RETRY_SECONDS`
(one verdict, `RedisOutage`), then Redis is tried again: a failed call costs a connect timeout,
so the fallback must not pay it on every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog
from redis.asyncio import ConnectionPool, Redis

log = structlog.get_logger(__name__)

RETRY_SECONDS = 5.0
TIMEOUT_SECONDS = 0.5


class RedisOutage:
    """Whether Redis is worth trying: after a failure, callers use their in-memory fallback
    for `retry_seconds`, then try Redis again."""

    def __init__(self, retry_seconds: float = RETRY_SECONDS) -> None:
        self.retry_seconds = retry_seconds
        self.down_until = 0.0

    def up(self) -> bool:
        return time.monotonic() >= self.down_until

    def failed(self, event: str, exc: BaseException) -> None:
        self.down_until = time.monotonic() + self.retry_seconds
        log.warning(event, error=repr(exc))


@dataclass
class SharedRedis:
    """The client, its connection pool (the `limits` storage builds its own client on it) and
    the outage verdict every user of the client shares."""

    client: Redis
    outage: RedisOutage = field(default_factory=RedisOutage)

    @classmethod
    def connect(cls, url: str, *, retry_seconds: float = RETRY_SECONDS) -> SharedRedis:
        """A client for `url`; nothing connects until the first command."""
        client = Redis.from_url(
            url,
            socket_connect_timeout=TIMEOUT_SECONDS,
            socket_timeout=TIMEOUT_SECONDS,
            decode_responses=True,
        )
        return cls(client, RedisOutage(retry_seconds))

    @property
    def pool(self) -> ConnectionPool:
        return self.client.connection_pool

    def available(self) -> Redis | None:
        """The client, or None while the outage verdict says to use the fallback."""
        return self.client if self.outage.up() else None

    async def aclose(self) -> None:
        try:
            await self.client.aclose()
        except Exception as exc:  # closing at shutdown must not fail it
            log.warning("redis_close_failed", error=repr(exc))
