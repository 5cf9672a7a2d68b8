"""Circuit breakers: a failing dependency (a model provider, a sandbox backend) is given a rest
instead of every request paying for its timeouts.

A breaker is *closed* while its dependency works. `failures` failures within a sliding
`window_seconds` open it: for `open_seconds` every call fails fast with `BreakerOpen` (carrying
the seconds left), and callers take their fallback. Then it is *half-open*: exactly one call,
across every app instance, goes through as the probe, the others still fail fast; the probe's
success closes the breaker, its failure opens it again. While the breaker is open or half-open
only the probe's outcome counts.

Where the state lives: in Redis when the app has one (`SharedRedis`), so every instance sees the
same breaker — the failures in a sorted set scored by the server's clock (a moving window), the
open period as a key `SET ... PX`, the single probe as a lock `SET ... NX PX`, each step one
Lua script so instances never interleave. Without Redis, and while the one client's outage
verdict says Redis is down, each instance keeps its own breaker in memory (same rules); a Redis
failure in the middle of a call never reaches the caller.

Why our own module: the circuit breakers on PyPI (purgatory, aiobreaker, pybreaker) count
*consecutive* failures rather than failures within a time window, and when half-open they let
every concurrent caller through instead of a single probe shared by all instances; neither rule
can be added from outside. This module is small and tested on memory and on real Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, TypedDict

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from fragments.config import Settings
from fragments.errors import FragmentsError
from fragments.observability import metrics
from fragments.redis_client import RedisOutage, SharedRedis

BreakerState = Literal["closed", "open", "half_open"]

# Keys in Redis: this prefix, then `{name}:<part>` (the braces keep a breaker's keys in one
# cluster slot, which its scripts need).
KEY_PREFIX = "fragments:breaker:"
# A breaker that tripped and was never probed again is forgotten after a day in Redis.
_TRIPPED_TTL_MS = 24 * 3600 * 1000

# Every script reads the Redis server's clock, so instances with skewed clocks share one window.
_NOW = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS: open, tripped, probe. ARGV: token, probe_ms.
# -> {verdict, milliseconds}: closed | probe | open (ms left) | busy (probe lock's ms left)
_ALLOW = """
local left = redis.call('PTTL', KEYS[1])
if left > 0 then return {'open', left} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'closed', 0} end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'probe', 0} end
return {'busy', redis.call('PTTL', KEYS[3])}
"""

# KEYS: failures, open, tripped, probe. ARGV: probe ('1'|'0'), member, window_ms, threshold,
# open_ms, tripped_ttl_ms. -> the state after the failure.
_FAILURE = (
    _NOW
    + """
local function trip()
  redis.call('SET', KEYS[2], now, 'PX', ARGV[5])
  redis.call('SET', KEYS[3], now, 'PX', ARGV[6])
  redis.call('DEL', KEYS[1], KEYS[4])
  return 'open'
end
if ARGV[1] == '1' then return trip() end
if redis.call('EXISTS', KEYS[3]) == 1 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return 'open' end
  return 'half_open'
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return trip() end
return 'closed'
"""
)

# KEYS: failures, open, tripped, probe. The probe succeeded: closed, with an empty window.
_CLOSE = "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) return 'closed'"

# KEYS: probe. ARGV: token. Give the probe lock back (the probe ended without a verdict).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: open, tripped.
_STATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'open' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'half_open' end
return 'closed'
"""


class BreakerOpen(FragmentsError):
    """The breaker fails fast: the dependency is resting, or another call is its probe."""

    status_code = 503
    code = "unavailable"

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = max(0.0, retry_after)
        seconds = max(1, round(self.retry_after))
        super().__init__(
            f"{name} is failing; it is tried again in about {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The three numbers of every breaker (plus how long a probe may hold its lock)."""

    failures: int = 5
    window_seconds: float = 60.0
    open_seconds: float = 30.0
    # A probe whose caller vanished frees the lock after this long (default: open_seconds).
    probe_timeout_seconds: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        return cls(
            failures=settings.breaker_failures,
            window_seconds=settings.breaker_window_seconds,
            open_seconds=settings.breaker_open_seconds,
        )

    @property
    def probe_seconds(self) -> float:
        if self.probe_timeout_seconds is not None:
            return self.probe_timeout_seconds
        return self.open_seconds


@dataclass(frozen=True, slots=True)
class Permit:
    """A call the breaker let through; hand it back with its outcome."""

    probe: bool
    # Decided in Redis (shared by every instance) or in this instance's memory.
    shared: bool
    token: str


class BreakerStatus(TypedDict):
    name: str
    state: BreakerState


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class MemoryBreaker:
    """One instance's breaker: the same rules as the shared one, in this process only."""

    def __init__(self, name: str, config: BreakerConfig, clock: Callable[[], float]) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._failures: deque[float] = deque()
        self._open_until = 0.0
        self._tripped = False
        self._probe_until = 0.0

    def state(self) -> BreakerState:
        if self._open_until > self._clock():
            return "open"
        return "half_open" if self._tripped else "closed"

    def allow(self) -> Permit:
        now = self._clock()
        if self._open_until > now:
            raise BreakerOpen(self.name, self._open_until - now)
        if not self._tripped:
            return Permit(probe=False, shared=False, token="")
        if self._probe_until > now:
            raise BreakerOpen(self.name, min(self._probe_until - now, self.config.open_seconds))
        self._probe_until = now + self.config.probe_seconds
        return Permit(probe=True, shared=False, token="")

    def failure(self, *, probe: bool) -> BreakerState:
        now = self._clock()
        if not probe:
            if self._tripped:
                return self.state()  # only the probe's outcome counts now
            self._failures.append(now)
            while self._failures and self._failures[0] <= now - self.config.window_seconds:
                self._failures.popleft()
            if len(self._failures) < self.config.failures:
                return "closed"
        self._open_until = now + self.config.open_seconds
        self._tripped = True
        self._probe_until = 0.0
        self._failures.clear()
        return "open"

    def success(self, *, probe: bool) -> None:
        if probe:
            self._tripped = False
            self._open_until = 0.0
            self._probe_until = 0.0
            self._failures.clear()

    def release(self, *, probe: bool) -> None:
        if probe:
            self._probe_until = 0.0


def _always(exc: BaseException) -> bool:
    return True


class CircuitBreaker:
    """A named breaker, shared through Redis when there is one; see the module's docstring.

    Either around a call, `async with breaker.guard(): ...` (raises `BreakerOpen` instead of
    running the block), or explicitly: `permit = await breaker.allow()`, then
    `record_success(permit)`, `record_failure(permit)` or `release(permit)`.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        redis: SharedRedis | None = None,
        *,
        prefix: str = KEY_PREFIX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self._redis = redis
        self._outage = redis.outage if redis is not None else RedisOutage()
        self.memory = MemoryBreaker(name, config, clock)
        base = f"{prefix}{{{name}}}:"
        self._failures_key = base + "failures"
        self._open_key = base + "open"
        self._tripped_key = base + "tripped"
        self._probe_key = base + "probe"
        self._scripts: dict[str, AsyncScript] = {}

    def _client(self) -> Redis | None:
        return self._redis.available() if self._redis is not None else None

    def _script(self, client: Redis, source: str) -> AsyncScript:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = client.register_script(source)
        return script

    def _redis_failed(self, exc: BaseException) -> None:
        self._outage.failed("breaker_redis_down", exc)

    async def state(self) -> BreakerState:
        """The breaker as every instance sees it (this instance's own while Redis is down)."""
        client = self._client()
        if client is not None:
            try:
                keys = [self._open_key, self._tripped_key]
                state = await self._script(client, _STATE)(keys=keys, client=client)
                return _as_state(state)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        return self.memory.state()

    async def allow(self) -> Permit:
        """Let a call through, or raise `BreakerOpen` (open, or half-open with the probe taken)."""
        client = self._client()
        if client is not None:
            token = uuid.uuid4().hex
            try:
                verdict, millis = await self._script(client, _ALLOW)(
                    keys=[self._open_key, self._tripped_key, self._probe_key],
                    args=[token, _ms(self.config.probe_seconds)],
                    client=client,
                )
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            else:
                if verdict == "closed":
                    return Permit(probe=False, shared=True, token=token)
                if verdict == "probe":
                    return Permit(probe=True, shared=True, token=token)
                left = int(millis) / 1000 if int(millis) > 0 else self.config.open_seconds
                if verdict == "busy":
                    left = min(left, self.config.open_seconds)
                raise BreakerOpen(self.name, left)
        return self.memory.allow()

    async def record_failure(self, permit: Permit) -> BreakerState:
        """The call failed: counted in the window (closed), or re-opens the breaker (probe)."""
        client = self._client() if permit.shared else None
        if client is not None:
            try:
                state = await self._script(client, _FAILURE)(
                    keys=[self._failures_key, self._open_key, self._tripped_key, self._probe_key],
                    args=[
                        "1" if permit.probe else "0",
                        permit.token or uuid.uuid4().hex,
                        _ms(self.config.window_seconds),
                        self.config.failures,
                        _ms(self.config.open_seconds),
                        _TRIPPED_TTL_MS,
                    ],
                    client=client,
                )
                return _as_state(state)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        # A probe granted by Redis is not this instance's probe: it counts as a plain failure.
        return self.memory.failure(probe=permit.probe and not permit.shared)

    async def record_success(self, permit: Permit) -> None:
        """The call worked: a probe's success closes the breaker; other successes change
        nothing (the window counts failures, not a ratio)."""
        if not permit.probe:
            return
        client = self._client() if permit.shared else None
        if client is not None:
            try:
                keys = [self._failures_key, self._open_key, self._tripped_key, self._probe_key]
                await self._script(client, _CLOSE)(keys=keys, client=client)
                return
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        self.memory.success(probe=not permit.shared)

    async def release(self, permit: Permit) -> None:
        """The call ended without telling whether the dependency works (cancelled): a probe
        gives its lock back so another call can probe."""
        if not permit.probe:
            return
        client = self._client() if permit.shared else None
        if client is not None:
            try:
                await self._script(client, _RELEASE)(
                    keys=[self._probe_key], args=[permit.token], client=client
                )
                return
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        self.memory.release(probe=not permit.shared)

    @asynccontextmanager
    async def guard(
        self, *, is_failure: Callable[[BaseException], bool] = _always
    ) -> AsyncIterator[Permit]:
        """Run the block under the breaker. An exception for which `is_failure` is true counts
        as a failure; any other exception means the dependency answered (the caller's own
        mistake), so it counts as a success. Cancellation decides nothing."""
        permit = await self.allow()
        try:
            yield permit
        except Exception as exc:
            if is_failure(exc):
                await asyncio.shield(self.record_failure(permit))
            else:
                await asyncio.shield(self.record_success(permit))
            raise
        except BaseException:
            await asyncio.shield(self.release(permit))
            raise
        await self.record_success(permit)


def _as_state(value: object) -> BreakerState:
    if value == "open":
        return "open"
    if value == "half_open":
        return "half_open"
    return "closed"


class BreakerRegistry:
    """The app's breakers by name (`provider:anthropic`, `sandbox:local`, ...), all with the
    same settings and the app's one Redis client; built once in the lifespan."""

    def __init__(
        self,
        config: BreakerConfig,
        redis: SharedRedis | None = None,
        *,
        prefix: str = KEY_PREFIX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    @classmethod
    def from_settings(cls, settings: Settings, redis: SharedRedis | None) -> BreakerRegistry:
        return cls(BreakerConfig.from_settings(settings), redis)

    def breaker(self, name: str) -> CircuitBreaker:
        """The breaker called `name` (made on first use; the same object afterwards)."""
        found = self._breakers.get(name)
        if found is None:
            found = self._breakers[name] = CircuitBreaker(
                name, self.config, self._redis, prefix=self._prefix, clock=self._clock
            )
        return found

    @property
    def names(self) -> list[str]:
        return sorted(self._breakers)

    async def snapshot(self) -> list[BreakerStatus]:
        """Every breaker this instance uses, by name, with its state."""
        return [
            BreakerStatus(name=name, state=await self._breakers[name].state())
            for name in self.names
        ]

    async def export_metrics(self) -> None:
        """Record every breaker's state as every instance sees it (read at scrape time, so a
        breaker another instance tripped shows here too)."""
        for status in await self.snapshot():
            metrics.breaker_state(status["name"], status["state"])
