"""Tiered chat limits over a rolling day: guests by IP, users by their team's tier, own keys
apart; headers on every answer, 429 with Retry-After and a sentence past the limit; Redis
counters, with memory taking over while Redis is down and Redis again once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import update

from fragments.config import Settings
from fragments.store.models import Team, UsageRecord
from tests.accounts import sign_up
from tests.apps import client_state
from tests.chat.conftest import app_client, chat_body
from tests.fakes import FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio


def limited(settings: Settings, **extra: object) -> Settings:
    update_ = {
        "rate_limit_guest_per_day": 3,
        "rate_limit_free_per_day": 4,
        "rate_limit_pro_per_day": 6,
        "rate_limit_own_key_per_day": 5,
        "response_cache": False,
        **extra,
    }
    return settings.model_copy(update=update_)


async def send(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **extra: object
) -> httpx.Response:
    return await client.post("/api/chat", json=chat_body(**extra), headers=headers or {})


@pytest.mark.auth_modes("guests")  # about guests, who do not exist with guests off
async def test_guests_are_limited_by_ip_with_headers(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = FragmentReply()
    try:
        async with app_client(limited(chat_settings)) as client:
            seen = []
            for _ in range(3):
                response = await send(client)
                assert response.status_code == 200
                seen.append(response.headers["x-ratelimit-remaining"])
                assert response.headers["x-ratelimit-limit"] == "3"
                assert int(response.headers["x-ratelimit-reset"]) > 0
            assert seen == ["2", "1", "0"]
            over = await send(client)
            assert over.status_code == 429
            assert over.json()["error"] == "rate_limited"
            assert "3 chat requests a day" in over.json()["detail"]
            assert 0 < int(over.headers["retry-after"]) <= 86400
            assert over.headers["x-ratelimit-remaining"] == "0"
            # Their own key: not the platform quota, a separate (abuse) limit.
            own = await send(client, config={"apiKey": "user-key"})
            assert own.status_code == 200
            assert own.headers["x-ratelimit-limit"] == "5"
    finally:
        fake_openai.default = None


async def test_users_are_limited_by_tier(chat_settings: Settings, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = FragmentReply()
    try:
        async with app_client(limited(chat_settings)) as client:
            alice = await sign_up(client, "alice")
            response = await send(client, alice.headers)
            assert response.headers["x-ratelimit-limit"] == "4"
            bob = await sign_up(client, "bob")
            db = client_state(client).db
            async with db.transaction() as session:
                await session.execute(update(Team).values(tier="pro"))
            response = await send(client, bob.headers)
            assert response.headers["x-ratelimit-limit"] == "6"
            async with db.transaction() as session:
                await session.execute(
                    update(Team).values(tier="enterprise", limits={"chat_per_day": 2})
                )
            assert (await send(client, bob.headers)).headers["x-ratelimit-limit"] == "2"
            # The limits library counts per limit value: a new tier limit starts its own window.
            assert (await send(client, bob.headers)).headers["x-ratelimit-remaining"] == "0"
            over = await send(client, bob.headers)
            assert over.status_code == 429
    finally:
        fake_openai.default = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    return subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    proc = _spawn_redis(port)
    try:
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(10)


async def _wait_redis(port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("redis did not start")


@pytest.fixture
async def redis_client(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    fake_openai.default = FragmentReply()
    with private_redis() as (port, _proc):
        await _wait_redis(port)
        settings = limited(
            chat_settings, redis_url=f"redis://127.0.0.1:{port}/0", rate_limit_guest_per_day=4
        )
        async with app_client(settings) as client:
            yield client, port
    fake_openai.default = None


@pytest.mark.auth_modes("guests")  # counts anonymous requests by IP
async def test_redis_down_and_back(redis_client: tuple[httpx.AsyncClient, int]) -> None:
    client, port = redis_client
    assert (await send(client)).headers["x-ratelimit-remaining"] == "3"
    assert (await send(client)).headers["x-ratelimit-remaining"] == "2"
    import redis.asyncio as aioredis

    r = aioredis.Redis(port=port)
    keys = await r.keys("*")
    assert keys  # the counters are in Redis
    # Redis goes away mid-traffic: memory takes over (its own count), requests still answered.
    await r.shutdown(nosave=True)
    await r.aclose()
    response = await send(client)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "3"  # a fresh in-memory window
    # Back: a new server on the same port; after the retry delay Redis counts again.
    with _spawn_redis(port) as again:
        try:
            await _wait_redis(port)
            redis = client_state(client).redis
            assert redis is not None
            redis.outage.down_until = 0.0  # skip the 5 s retry delay
            response = await send(client)
            assert response.status_code == 200
            assert response.headers["x-ratelimit-remaining"] == "3"  # counted in (new) Redis
            r2 = aioredis.Redis(port=port)
            assert await r2.keys("*")
            await r2.aclose()
        finally:
            again.terminate()
            again.wait(10)


async def test_monthly_token_budget(chat_settings: Settings, fake_openai: FakeOpenAI) -> None:
    async with app_client(limited(chat_settings)) as client:
        alice = await sign_up(client, "alice")
        db = client_state(client).db
        async with db.transaction() as session:
            # An enterprise team's own budget (a free team's figure would be ignored).
            await session.execute(
                update(Team).values(tier="enterprise", limits={"monthly_tokens": 1000})
            )
        fake_openai.script(FragmentReply(input_tokens=900, output_tokens=200))
        assert (await send(client, alice.headers)).status_code == 200
        over = await send(client, alice.headers)
        assert over.status_code == 429
        assert over.json()["error"] == "quota_exceeded"
        assert "1,100 of its 1,000 tokens" in over.json()["detail"]
        # Their own key is not charged to the team's budget.
        fake_openai.script(FragmentReply())
        own = await send(client, alice.headers, config={"apiKey": "user-key"})
        assert own.status_code == 200


async def test_the_monthly_sum_is_kept_briefly_and_own_usage_counts_at_once(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    """The budget check does not sum the team's usage rows on every request: an instance keeps
    the sum for token_budget_cache_seconds, adds what it records itself at once, and sees what
    other instances recorded (rows it did not write) once the kept sum expires."""
    settings = limited(chat_settings, token_budget_cache_seconds=3600)
    async with app_client(settings) as client:
        alice = await sign_up(client, "alice")
        state = client_state(client)
        db = state.db
        async with db.transaction() as session:
            await session.execute(
                update(Team).values(tier="enterprise", limits={"monthly_tokens": 2000})
            )
        fake_openai.script(FragmentReply(input_tokens=500, output_tokens=100))
        assert (await send(client, alice.headers)).status_code == 200  # 600 used, kept
        me = (await client.get("/api/auth/me", headers=alice.headers)).json()
        # Another instance records 1,500 tokens for the team: not seen while the sum is kept.
        async with db.transaction() as session:
            session.add(
                UsageRecord(user_id=me["id"], team_id=me["team_id"], model="x/y", input_tokens=1500)
            )
        fake_openai.script(FragmentReply(input_tokens=100, output_tokens=100))
        assert (await send(client, alice.headers)).status_code == 200  # 800 here, 2,300 in all
        # Once the kept sum expires the database's total counts: over the budget.
        state.usage_cache.ttl = 0.0
        state.usage_cache.forget()
        over = await send(client, alice.headers)
        assert over.status_code == 429
        assert "2,300 of its 2,000 tokens" in over.json()["detail"]


@pytest.mark.auth_modes("guests")  # counts anonymous requests by IP
async def test_the_redis_client_is_closed_at_shutdown(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    import redis.asyncio as aioredis

    fake_openai.default = FragmentReply()
    try:
        with private_redis() as (port, _proc):
            await _wait_redis(port)
            settings = limited(
                chat_settings,
                redis_url=f"redis://127.0.0.1:{port}/0",
                response_cache=True,
            )
            watcher = aioredis.Redis(port=port)
            async with app_client(settings) as client:
                assert (await send(client)).status_code == 200  # the limiter and the cache
                during = await watcher.client_list()
                # The watcher and the app's one client (the limiter and the cache share its pool).
                assert len(during) >= 2
            after = await watcher.client_list()
            await watcher.aclose()
            assert len(after) == 1  # only the watcher is left
    finally:
        fake_openai.default = None
