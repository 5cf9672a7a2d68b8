"""Sandbox runs have their own rolling-day limit, apart from chat: X-RateLimit-* headers on every
run, 429 with Retry-After and a sentence past it; guests by IP, users by their team's tier (an
enterprise team's own figure); Redis counters with memory while Redis is down and Redis again
once it is back. The sandbox itself is stubbed: these tests are about the limit."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from sqlalchemy import update

from fragments.config import Settings
from fragments.store.models import Team
from tests.accounts import sign_up
from tests.apps import app_client, client_state
from tests.chat.test_rate_limits import _spawn_redis, _wait_redis, private_redis
from tests.fakes.sandboxes import FakeSandboxes

pytestmark = pytest.mark.anyio

RUN = {"fragment": {"template": "code-interpreter-v1", "code": "print(1)"}}


def limited(settings: Settings, **extra: object) -> Settings:
    update_ = {
        "sandbox_limit_guest_per_day": 2,
        "sandbox_limit_free_per_day": 3,
        "sandbox_limit_pro_per_day": 5,
        # Chat's own limits stay small and apart: a sandbox run never counts against them.
        "rate_limit_guest_per_day": 1,
        "rate_limit_free_per_day": 1,
        **extra,
    }
    return settings.model_copy(update=update_)


def sandbox_client(settings: Settings) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return app_client(settings, sandboxes=FakeSandboxes())


@pytest.mark.auth_modes("guests")  # about guests, who do not exist with guests off
async def test_guests_get_their_own_looser_sandbox_limit(db_settings: Settings) -> None:
    async with sandbox_client(limited(db_settings)) as client:
        seen = []
        for _ in range(2):
            response = await client.post("/api/sandbox", json=RUN)
            assert response.status_code == 200, response.text
            assert response.headers["x-ratelimit-limit"] == "2"
            assert int(response.headers["x-ratelimit-reset"]) > 0
            seen.append(response.headers["x-ratelimit-remaining"])
        assert seen == ["1", "0"]
        over = await client.post("/api/sandbox", json=RUN)
        assert over.status_code == 429
        assert over.json()["error"] == "rate_limited"
        assert "2 sandbox runs a day" in over.json()["detail"]
        assert 0 < int(over.headers["retry-after"]) <= 86400
        # The streamed form is limited the same way.
        stream = await client.post(
            "/api/sandbox", json=RUN, headers={"Accept": "text/event-stream"}
        )
        assert stream.status_code == 429
        # A request the sandbox refuses anyway (no fragment) is a 400, not counted or limited.
        assert (await client.post("/api/sandbox", json={})).status_code == 400


async def test_users_are_limited_by_tier_apart_from_chat(db_settings: Settings) -> None:
    async with sandbox_client(limited(db_settings)) as client:
        alice = await sign_up(client, "alice")
        first = await client.post("/api/sandbox", json=RUN, headers=alice.headers)
        assert first.headers["x-ratelimit-limit"] == "3"
        # Chat allows this user 1 a day; the sandbox runs above did not use it up.
        chat = await client.post(
            "/api/chat",
            json={
                "messages": [{"role": "user", "content": "hi"}],
                "model": {"id": "gpt-4.1", "providerId": "openai"},
            },
            headers=alice.headers,
        )
        assert chat.headers.get("x-ratelimit-limit") == "1"
        assert chat.headers.get("x-ratelimit-remaining") == "0"
        db = client_state(client).db
        async with db.transaction() as session:
            await session.execute(update(Team).values(tier="pro"))
        assert (await client.post("/api/sandbox", json=RUN, headers=alice.headers)).headers[
            "x-ratelimit-limit"
        ] == "5"
        # An enterprise team's own figure; a free team's is ignored (it cannot raise its own).
        async with db.transaction() as session:
            await session.execute(update(Team).values(tier="free", limits={"sandbox_per_day": 9}))
        assert (await client.post("/api/sandbox", json=RUN, headers=alice.headers)).headers[
            "x-ratelimit-limit"
        ] == "3"
        async with db.transaction() as session:
            await session.execute(update(Team).values(tier="enterprise"))
        assert (await client.post("/api/sandbox", json=RUN, headers=alice.headers)).headers[
            "x-ratelimit-limit"
        ] == "9"


@pytest.mark.auth_modes("guests")  # counts anonymous requests by IP
async def test_sandbox_limits_with_redis_down_and_back(db_settings: Settings) -> None:
    import redis.asyncio as aioredis

    with private_redis() as (port, _proc):
        await _wait_redis(port)
        settings = limited(db_settings, redis_url=f"redis://127.0.0.1:{port}/0")
        async with sandbox_client(settings) as client:
            assert (await client.post("/api/sandbox", json=RUN)).headers[
                "x-ratelimit-remaining"
            ] == "1"
            r = aioredis.Redis(port=port)
            assert any(b"sandbox" in key for key in await r.keys("*"))
            # Redis goes away mid-traffic: memory takes over with its own count.
            await r.shutdown(nosave=True)
            await r.aclose()
            response = await client.post("/api/sandbox", json=RUN)
            assert response.status_code == 200
            assert response.headers["x-ratelimit-remaining"] == "1"
            assert (await client.post("/api/sandbox", json=RUN)).headers[
                "x-ratelimit-remaining"
            ] == "0"
            assert (await client.post("/api/sandbox", json=RUN)).status_code == 429
            # Back (a new, empty server on the same port): Redis counts again.
            with _spawn_redis(port) as again:
                try:
                    await _wait_redis(port)
                    redis = client_state(client).redis
                    assert redis is not None
                    redis.outage.down_until = 0.0  # skip the 5 s retry delay
                    response = await client.post("/api/sandbox", json=RUN)
                    assert response.status_code == 200
                    assert response.headers["x-ratelimit-remaining"] == "1"
                    r2 = aioredis.Redis(port=port)
                    assert any(b"sandbox" in key for key in await r2.keys("*"))
                    await r2.aclose()
                finally:
                    again.terminate()
                    again.wait(10)
