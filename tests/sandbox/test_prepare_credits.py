"""A prepare's credit (the run it pays for) lives in Redis when one is configured: every app
process sees it, it expires with the sandbox, and two concurrent runs cannot both spend it;
while Redis is down the credit lives in the process's memory and still pays for its run.

Against the shared Redis on 127.0.0.1:6379, under a key prefix of this run's own for the
credits made here and with owners (accounts) new to this run for the apps', so runs never see each
other's credits; and a private redis-server for the outage (the shared one is never
stopped). The sandbox service is a stand-in: these tests are about counting runs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from fragments.config import Settings
from fragments.quota.credits import KEY_PREFIX, SharedPrepareCredits
from fragments.redis_client import SharedRedis
from tests.accounts import sign_up
from tests.apps import app_client as running_app
from tests.apps import client_state
from tests.chat.test_rate_limits import _spawn_redis, _wait_redis, private_redis
from tests.fakes.sandboxes import FakeSandboxes

pytestmark = pytest.mark.anyio

SHARED_REDIS = "redis://127.0.0.1:6379/0"
STREAMLIT = "streamlit-developer"
GRADIO = "gradio-developer"
# This run's keys on the shared Redis: apart from other runs', removed at the end.
PREFIX = f"test-{secrets.token_hex(4)}:prepare-credit:"


@pytest.fixture
async def shared_redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(SHARED_REDIS, socket_connect_timeout=0.5, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"Redis on 127.0.0.1:6379 is unreachable ({exc!r}); it runs on dev and CI")
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=PREFIX + "*"):
            await client.delete(key)
        await client.aclose()


def _run(conversation: str, template: str = STREAMLIT) -> dict[str, Any]:
    code = "import streamlit as st\nst.write(1)\n"
    return {"fragment": {"template": template, "code": code}, "conversation_id": conversation}


def _prepare(conversation: str, template: str = STREAMLIT) -> dict[str, str]:
    return {"template": template, "conversation_id": conversation}


def app_client(
    settings: Settings, sandboxes: FakeSandboxes | None = None
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """An app process (lifespan running) whose sandboxes are stand-ins."""
    return running_app(settings, sandboxes=sandboxes or FakeSandboxes())


def _remaining(response: httpx.Response) -> str | None:
    assert response.status_code == 200, response.text
    remaining: str | None = response.headers.get("x-ratelimit-remaining")
    return remaining


async def test_a_credit_in_redis_expires_with_the_sandbox_and_is_spent_once(
    shared_redis: Redis, settings: Settings
) -> None:
    redis_settings = settings.model_copy(
        update={"redis_url": SHARED_REDIS, "sandbox_lifetime_seconds": 120.0}
    )
    # Two processes: each its own client, as each app builds its own.
    one, two = SharedRedis.connect(SHARED_REDIS), SharedRedis.connect(SHARED_REDIS)
    lifetime = redis_settings.sandbox_lifetime_seconds
    first = SharedPrepareCredits(one, lifetime, prefix=PREFIX)
    second = SharedPrepareCredits(two, lifetime, prefix=PREFIX)
    try:
        owner = f"u{secrets.token_hex(3)}:c1"
        await first.grant(owner, STREAMLIT)
        assert await shared_redis.get(PREFIX + owner) == STREAMLIT
        assert 0 < await shared_redis.pttl(PREFIX + owner) <= 120_000
        # Another process sees it; a credit for another template is not this one.
        assert await second.holds(owner, STREAMLIT)
        assert not await second.holds(owner, GRADIO)
        # Twenty concurrent runs over both processes: exactly one is paid for.
        spent = await asyncio.gather(
            *((first if i % 2 else second).use(owner, STREAMLIT) for i in range(20))
        )
        assert spent.count(True) == 1
        assert await shared_redis.exists(PREFIX + owner) == 0
        # A run of another template drops the credit (it replaces the prepared sandbox).
        await first.grant(owner, STREAMLIT)
        assert not await second.use(owner, GRADIO)
        assert not await first.use(owner, STREAMLIT)
        # Nothing was kept in memory while Redis was up.
        assert not first.memory.holds(owner, STREAMLIT)
    finally:
        await one.aclose()
        await two.aclose()


async def test_two_app_processes_sharing_redis_count_a_prepared_run_once(
    shared_redis: Redis, db_settings: Settings
) -> None:
    settings = db_settings.model_copy(
        update={"redis_url": SHARED_REDIS, "sandbox_limit_free_per_day": 10}
    )
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(app_client(settings))
        two = await stack.enter_async_context(app_client(settings))
        # A new account: its counter in the shared Redis starts at zero.
        account = await sign_up(one, "alice")
        headers = account.headers
        made = await one.post("/api/conversations", json={}, headers=headers)
        conversation = str(made.json()["id"])

        # Prepared on one process, run on the other: counted once (by the prepare).
        prepared = await one.post(
            "/api/sandbox/prepare", json=_prepare(conversation), headers=headers
        )
        assert _remaining(prepared) == "9"
        ran = await two.post("/api/sandbox", json=_run(conversation), headers=headers)
        assert _remaining(ran) is None  # not counted: the prepare paid for it
        assert (
            _remaining(await two.post("/api/sandbox", json=_run(conversation), headers=headers))
            == "8"
        )

        # Prepared again, then four runs at once over both processes: one credit, one free run.
        again = await two.post("/api/sandbox/prepare", json=_prepare(conversation), headers=headers)
        assert _remaining(again) == "7"
        runs = await asyncio.gather(
            *(
                (one if i % 2 else two).post(
                    "/api/sandbox", json=_run(conversation), headers=headers
                )
                for i in range(4)
            )
        )
        assert [_remaining(r) for r in runs].count(None) == 1
        last = await one.post("/api/sandbox", json=_run(conversation), headers=headers)
        assert _remaining(last) == "3"  # 7, less three counted runs, less this one


async def test_the_credit_pays_from_memory_while_redis_is_down_and_from_redis_once_back(
    settings: Settings,
) -> None:
    with private_redis() as (port, _proc):
        await _wait_redis(port)
        url = f"redis://127.0.0.1:{port}/0"
        limited = settings.model_copy(update={"redis_url": url, "sandbox_limit_guest_per_day": 10})
        async with app_client(limited) as client:
            state = client_state(client)
            watcher = Redis.from_url(url, decode_responses=True)
            up = f"c-{secrets.token_hex(3)}"
            assert _remaining(await client.post("/api/sandbox/prepare", json=_prepare(up))) == "9"
            assert await watcher.keys(KEY_PREFIX + "*") == [f"{KEY_PREFIX}anonymous:{up}"]

            # Redis goes away: the limiter counts in memory (afresh), and so does the credit.
            await watcher.shutdown(nosave=True)
            await watcher.aclose()
            down = f"c-{secrets.token_hex(3)}"
            assert _remaining(await client.post("/api/sandbox/prepare", json=_prepare(down))) == "9"
            assert state.prepare_credits.memory.holds(f"anonymous:{down}", STREAMLIT)
            assert _remaining(await client.post("/api/sandbox", json=_run(down))) is None
            assert _remaining(await client.post("/api/sandbox", json=_run(down))) == "8"

            # Back (a new, empty server on the same port): credits are kept in Redis again.
            with _spawn_redis(port) as again:
                try:
                    await _wait_redis(port)
                    # Skip the 5 s retry delay (one verdict for the one client).
                    assert state.redis is not None
                    state.redis.outage.down_until = 0.0
                    back = f"c-{secrets.token_hex(3)}"
                    prepared = await client.post("/api/sandbox/prepare", json=_prepare(back))
                    assert _remaining(prepared) == "9"
                    watcher = Redis.from_url(url, decode_responses=True)
                    assert await watcher.keys(KEY_PREFIX + "*") == [f"{KEY_PREFIX}anonymous:{back}"]
                    assert not state.prepare_credits.memory.holds(f"anonymous:{back}", STREAMLIT)
                    assert _remaining(await client.post("/api/sandbox", json=_run(back))) is None
                    assert await watcher.keys(KEY_PREFIX + "*") == []
                    assert _remaining(await client.post("/api/sandbox", json=_run(back))) == "8"
                    await watcher.aclose()
                finally:
                    again.terminate()
                    again.wait(10)


async def test_a_repeated_prepare_grants_no_second_credit(settings: Settings) -> None:
    """A repeat answers the sandbox the first prepare paid for; if the run spends that credit
    while the repeat is still preparing, the repeat must not grant another (a free run)."""
    sandboxes = FakeSandboxes()
    async with app_client(
        settings.model_copy(update={"sandbox_limit_guest_per_day": 10}), sandboxes
    ) as client:
        conversation = f"c-{secrets.token_hex(3)}"
        assert (
            _remaining(await client.post("/api/sandbox/prepare", json=_prepare(conversation)))
            == "9"
        )

        # Prepares are slow from here on: each waits for `release`.
        sandboxes.release_prepare = release = asyncio.Event()
        repeat = asyncio.create_task(
            client.post("/api/sandbox/prepare", json=_prepare(conversation))
        )
        await asyncio.wait_for(sandboxes.preparing.wait(), 10)
        # The run spends the credit while the repeat is still preparing ...
        assert _remaining(await client.post("/api/sandbox", json=_run(conversation))) is None
        release.set()
        assert _remaining(await repeat) is None  # the repeat itself is free
        # ... and the next run is counted: the repeat granted nothing.
        assert _remaining(await client.post("/api/sandbox", json=_run(conversation))) == "8"
