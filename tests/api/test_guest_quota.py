"""Guests are counted by client IP whatever token they hold: minting guest tokens is limited per
IP (429 with Retry-After and X-RateLimit-* past it; 403 with guests off, never counted), and a
guest token's sandbox runs use its IP's guest bucket, not a fresh one. In memory and in Redis.
The sandbox itself is stubbed: these tests are about the limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest

from fragments.config import Settings
from tests.accounts import bearer
from tests.apps import app_client, client_state
from tests.chat.test_rate_limits import private_redis
from tests.fakes.sandboxes import FakeSandboxes

pytestmark = pytest.mark.anyio

RUN = {"fragment": {"template": "code-interpreter-v1", "code": "print(1)"}}


@pytest.fixture(params=["memory", "redis"])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Where the counters live: this process's memory, or a private Redis server."""
    if request.param == "memory":
        yield None
        return
    with private_redis() as (port, _proc):
        yield f"redis://127.0.0.1:{port}/0"


@asynccontextmanager
async def guest_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a stand-in sandbox, its requests coming from one guest address."""
    async with app_client(
        settings, sandboxes=FakeSandboxes(), client=("198.51.100.20", 50000)
    ) as client:
        await _redis_ready(client, settings)
        yield client


async def _redis_ready(client: httpx.AsyncClient, settings: Settings) -> None:
    """Wait for a private Redis server that is still starting."""
    if not settings.redis_url:
        return
    import anyio
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(settings.redis_url)
    try:
        for _ in range(100):
            try:
                await r.ping()
                return
            except Exception:
                await anyio.sleep(0.05)
        raise RuntimeError("redis did not start")
    finally:
        await r.aclose()


def _settings(db_settings: Settings, redis_url: str | None, **extra: object) -> Settings:
    return db_settings.model_copy(update={"redis_url": redis_url, **extra})


async def test_minting_guest_tokens_is_limited_per_ip(
    db_settings: Settings, redis_url: str | None
) -> None:
    settings = _settings(db_settings, redis_url, allow_guests=True, guest_tokens_per_day=2)
    async with guest_client(settings) as client:
        first = await client.post("/api/auth/guest")
        assert first.status_code == 201, first.text
        assert first.headers["x-ratelimit-limit"] == "2"
        assert first.headers["x-ratelimit-remaining"] == "1"
        assert int(first.headers["x-ratelimit-reset"]) > 0
        second = await client.post("/api/auth/guest")
        assert second.status_code == 201
        assert second.headers["x-ratelimit-remaining"] == "0"
        over = await client.post("/api/auth/guest")
        assert over.status_code == 429
        body = over.json()
        assert body["error"] == "rate_limited"
        assert "2 guest sessions a day" in body["detail"]
        assert 0 < int(over.headers["retry-after"]) <= 86400
        assert over.headers["x-ratelimit-limit"] == "2"
        assert over.headers["x-ratelimit-remaining"] == "0"
        # Holding a guest token does not open a new allowance either.
        again = await client.post("/api/auth/guest", headers=bearer(first.json()["access_token"]))
        assert again.status_code == 429
    if redis_url is not None:
        # A restarted app (or another instance) sharing Redis remembers the count.
        async with guest_client(settings) as client:
            assert (await client.post("/api/auth/guest")).status_code == 429


async def test_with_guests_off_minting_is_refused_and_never_counted(
    db_settings: Settings, redis_url: str | None
) -> None:
    settings = _settings(db_settings, redis_url, allow_guests=False, guest_tokens_per_day=1)
    async with guest_client(settings) as client:
        for _ in range(3):
            refused = await client.post("/api/auth/guest")
            assert refused.status_code == 403
            assert refused.json()["error"] == "no_guests"
            assert "x-ratelimit-limit" not in refused.headers


async def test_guest_tokens_share_their_ips_sandbox_runs(
    db_settings: Settings, redis_url: str | None
) -> None:
    settings = _settings(
        db_settings,
        redis_url,
        allow_guests=True,
        sandbox_limit_guest_per_day=3,
        sandbox_limit_free_per_day=50,
    )
    async with guest_client(settings) as client:
        anonymous = await client.post("/api/sandbox", json=RUN)
        assert anonymous.status_code == 200, anonymous.text
        assert anonymous.headers["x-ratelimit-remaining"] == "2"
        seen = []
        for _ in range(2):
            token = (await client.post("/api/auth/guest")).json()["access_token"]
            run = await client.post("/api/sandbox", json=RUN, headers=bearer(token))
            assert run.status_code == 200, run.text
            assert run.headers["x-ratelimit-limit"] == "3"
            seen.append(run.headers["x-ratelimit-remaining"])
        assert seen == ["1", "0"]
        fresh = (await client.post("/api/auth/guest")).json()["access_token"]
        over = await client.post("/api/sandbox", json=RUN, headers=bearer(fresh))
        assert over.status_code == 429
        assert "Guests can make 3 sandbox runs a day" in over.json()["detail"]
        assert (await client.post("/api/sandbox", json=RUN)).status_code == 429


async def test_guest_counters_fall_back_to_memory_while_redis_is_down(
    db_settings: Settings,
) -> None:
    import redis.asyncio as aioredis

    from fragments.quota.guest_budget import guest_tokens_used, record_guest_tokens

    with private_redis() as (port, _proc):
        url = f"redis://127.0.0.1:{port}/0"
        settings = _settings(db_settings, url, allow_guests=True, guest_tokens_per_day=1)
        async with guest_client(settings) as client:
            assert (await client.post("/api/auth/guest")).status_code == 201
            assert (await client.post("/api/auth/guest")).status_code == 429
            limiter = client_state(client).limiter
            await record_guest_tokens(limiter, "198.51.100.20", 700)
            assert await guest_tokens_used(limiter, "198.51.100.20") == 700
            watcher = aioredis.Redis(port=port)
            assert any(b"guest-tokens/" in key for key in await watcher.keys("*"))
            # Redis goes away: memory counts afresh, nothing fails.
            await watcher.shutdown(nosave=True)
            await watcher.aclose()
            assert (await client.post("/api/auth/guest")).status_code == 201
            assert (await client.post("/api/auth/guest")).status_code == 429
            assert await guest_tokens_used(limiter, "198.51.100.20") == 0
            await record_guest_tokens(limiter, "198.51.100.20", 300)
            assert await guest_tokens_used(limiter, "198.51.100.20") == 300
