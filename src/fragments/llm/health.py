"""Health checks of the providers the platform holds keys for, shared by every instance.

Every `FRAGMENTS_HEALTH_INTERVAL_SECONDS` each provider with a platform key is asked for its
model list — an authenticated request that costs no tokens, answered by every wire format
(OpenAI-compatible `GET {base}/models`, Anthropic `GET {base}/v1/models`, Gemini
`GET {base}/v1beta/models`). Its outcome is a `ProviderStatus`: `up`, `degraded` (slow, rate
limited, or a refusal that is not the server failing) or `down` (5xx, overloaded, the key
refused, no connection, no answer in time), the latency, the error and when.

Shared through Redis when the app has one: time is cut into slots of one interval, and the
instance that wins `SET <slot key> NX` probes for that slot, so one instance probes per interval
whichever instances are running; the statuses are written to Redis for every instance to read
(they expire after a few intervals, so a status nobody refreshes becomes unknown rather than
stale). Without Redis, or while it is down, each instance probes and remembers for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from fragments.config import Settings
from fragments.llm.providers import PROVIDERS, ProviderSpec
from fragments.redis_client import RedisOutage, SharedRedis

log = structlog.get_logger(__name__)

HealthState = Literal["up", "degraded", "down"]

KEY_PREFIX = "fragments:health:"
# A listing slower than this is `degraded`: the provider answers, but badly.
SLOW_SECONDS = 5.0
# A probe waits at most this long (and never longer than the interval).
PROBE_TIMEOUT_SECONDS = 10.0
# Statuses live in Redis for this many intervals past their check.
_KEEP_INTERVALS = 3
_ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One provider's last health check. `last_error` is a short description (an HTTP status
    or an exception's class), never a key or a URL."""

    provider: str
    status: HealthState
    latency_ms: int | None
    last_error: str | None
    checked_at: str  # ISO 8601, UTC

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> ProviderStatus | None:
        """The status written by `to_json`; None for anything else."""
        try:
            data = json.loads(text)
            status = data["status"]
            if status not in ("up", "degraded", "down"):
                return None
            latency = data.get("latency_ms")
            error = data.get("last_error")
            return cls(
                provider=str(data["provider"]),
                status=status,
                latency_ms=int(latency) if latency is not None else None,
                last_error=str(error) if error is not None else None,
                checked_at=str(data["checked_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def listing_request(spec: ProviderSpec, base_url: str, key: str) -> tuple[str, dict[str, str]]:
    """The URL and headers of the provider's model listing, by wire format."""
    base = base_url.rstrip("/")
    if spec.protocol == "anthropic":
        return f"{base}/v1/models", {"x-api-key": key, "anthropic-version": _ANTHROPIC_VERSION}
    if spec.protocol == "google":
        # As the streaming URL: a base URL that already names an API version keeps it.
        if not base.rsplit("/", 1)[-1].startswith("v1"):
            base += "/v1beta"
        return f"{base}/models", {"x-goog-api-key": key}
    return f"{base}/models", {"Authorization": f"Bearer {key}"}


def judge(status_code: int, latency: float) -> tuple[HealthState, str | None]:
    """A listing's HTTP status (and how long it took) as a health state and an error."""
    if 200 <= status_code < 300:
        if latency > SLOW_SECONDS:
            return "degraded", f"slow: {latency:.1f} s"
        return "up", None
    error = f"HTTP {status_code}"
    if status_code in (401, 403):
        return "down", f"{error}: the platform key is refused"
    if status_code in (404, 405):
        # An OpenAI-compatible server that does not list models still answered.
        return "up", None
    if status_code == 429:
        return "degraded", f"{error}: rate limited"
    if status_code >= 500 or status_code == 408:
        return "down", error
    return "degraded", error


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def probe(
    client: httpx.AsyncClient, spec: ProviderSpec, base_url: str, key: str, limit: float
) -> ProviderStatus:
    """Ask one provider for its model list; never raises."""
    url, headers = listing_request(spec, base_url, key)
    started = time.monotonic()
    try:
        response = await client.get(url, headers=headers, timeout=limit)
    except httpx.TimeoutException as exc:
        return ProviderStatus(spec.id, "down", None, f"timeout ({type(exc).__name__})", _now())
    except httpx.HTTPError as exc:  # refused, reset, TLS, a broken response
        return ProviderStatus(spec.id, "down", None, type(exc).__name__, _now())
    latency = time.monotonic() - started
    state, error = judge(response.status_code, latency)
    return ProviderStatus(spec.id, state, round(latency * 1000), error, _now())


class HealthBoard:
    """The providers' health, probed on a timer (`running()`) and read by the failover chain
    (`status`, `all`) and `GET /api/status`."""

    def __init__(
        self,
        settings: Settings,
        redis: SharedRedis | None = None,
        *,
        prefix: str = KEY_PREFIX,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.interval = settings.health_interval_seconds
        self._targets: list[tuple[ProviderSpec, str, str]] = []
        for spec in PROVIDERS.values():
            key = spec.platform_key(settings)
            if key:
                self._targets.append((spec, spec.platform_base_url(settings), key))
        self._redis = redis
        self._outage = redis.outage if redis is not None else RedisOutage()
        self._prefix = prefix
        self._client = client or httpx.AsyncClient()
        self._own_client = client is None
        self._memory: dict[str, ProviderStatus] = {}
        self._instance = uuid.uuid4().hex
        self._last_slot: int | None = None

    @property
    def providers(self) -> list[str]:
        """The providers this board checks (those with a platform key)."""
        return [spec.id for spec, _, _ in self._targets]

    def _available(self) -> Redis | None:
        return self._redis.available() if self._redis is not None else None

    def _key(self, provider_id: str) -> str:
        return f"{self._prefix}status:{provider_id}"

    async def status(self, provider_id: str) -> ProviderStatus | None:
        """The provider's last known status; None when it was never checked (or no instance
        checked it for a few intervals)."""
        client = self._available()
        if client is not None:
            try:
                text = await client.get(self._key(provider_id))
            except (RedisError, OSError) as exc:
                self._outage.failed("health_redis_down", exc)
            else:
                return ProviderStatus.from_json(text) if text else None
        return self._memory.get(provider_id)

    async def all(self) -> list[ProviderStatus]:
        """The last known status of every checked provider, in the providers' order."""
        ids = self.providers
        if not ids:
            return []
        client = self._available()
        if client is not None:
            try:
                texts = await client.mget([self._key(i) for i in ids])
            except (RedisError, OSError) as exc:
                self._outage.failed("health_redis_down", exc)
            else:
                found = (ProviderStatus.from_json(t) if t else None for t in texts)
                return [s for s in found if s is not None]
        return [self._memory[i] for i in ids if i in self._memory]

    async def _claim(self, slot: int) -> bool:
        """Whether this instance probes for `slot` (one instance per slot when Redis is up)."""
        if self._last_slot == slot:
            return False
        client = self._available()
        if client is not None:
            try:
                won = await client.set(
                    f"{self._prefix}round:{slot}",
                    self._instance,
                    nx=True,
                    px=max(1, int(self.interval * 2000)),
                )
            except (RedisError, OSError) as exc:
                self._outage.failed("health_redis_down", exc)
            else:
                self._last_slot = slot
                return bool(won)
        self._last_slot = slot
        return True

    async def check(self) -> list[ProviderStatus]:
        """Probe every provider now and publish the statuses (whoever's turn it is)."""
        timeout = min(PROBE_TIMEOUT_SECONDS, max(self.interval, 0.1))
        results = await asyncio.gather(
            *(probe(self._client, spec, url, key, timeout) for spec, url, key in self._targets)
        )
        await self._publish(results)
        return list(results)

    async def _publish(self, results: Sequence[ProviderStatus]) -> None:
        for result in results:
            self._memory[result.provider] = result
            if result.status != "up":
                log.warning(
                    "provider_health",
                    provider=result.provider,
                    status=result.status,
                    error=result.last_error,
                )
        client = self._available()
        if client is None or not results:
            return
        keep_ms = max(1, int(self.interval * _KEEP_INTERVALS * 1000))
        try:
            async with client.pipeline(transaction=False) as pipe:
                for result in results:
                    pipe.set(self._key(result.provider), result.to_json(), px=keep_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._outage.failed("health_redis_down", exc)

    async def tick(self) -> bool:
        """Probe if this instance wins the current slot; whether it probed."""
        if not self._targets or self.interval <= 0:
            return False
        if not await self._claim(int(time.time() // self.interval)):
            return False
        await self.check()
        return True

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # a bad round must not end the checks
                log.warning("health_check_failed", error=repr(exc))
            # Wake just past the next slot's start, so instances race for it together.
            wait = self.interval - (time.time() % self.interval) + 0.01
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HealthBoard]:
        """Check in the background while the block runs (nothing to do without providers with
        a platform key, or with the interval at 0).

        The loop ends on `stop` as well as on cancellation: a cancel that lands inside a Redis
        or HTTP call can be swallowed by the client library, and a loop relying on it alone
        then never ends (seen as a hung shutdown)."""
        task = None
        stop = asyncio.Event()
        if self._targets and self.interval > 0:
            task = asyncio.create_task(self._loop(stop), name="provider-health")
        try:
            yield self
        finally:
            stop.set()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()
