"""The E2B backend in a fleet: two service instances (two app processes' worth) share the fake
E2B cloud and the real Redis on 127.0.0.1:6379 (under a key prefix of this run's own).
They never create two sandboxes for one conversation, see each other's restarts, and a graceful
shutdown kills only what the instance created and no other live instance uses."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from fragments.config import Settings
from fragments.redis_client import SharedRedis
from fragments.sandbox.e2b import E2BSandboxService
from fragments.schemas import Fragment, InterpreterResult
from tests.fakes.e2b_sdk import FakeCloud

pytestmark = pytest.mark.anyio

KEY = "e2b_test_key"
SHARED_REDIS = "redis://127.0.0.1:6379/0"
PREFIX = f"test-{secrets.token_hex(4)}:e2b:"
OWNER = "user-1:conversation-1"


def cell(code: str) -> Fragment:
    return Fragment.model_validate({"template": "code-interpreter-v1", "code": code})


def text_of(result: object) -> str:
    assert isinstance(result, InterpreterResult), result
    assert result.error is None, result.error
    return "".join(r.text or "" for r in result.results)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[FakeCloud]:
    fake = FakeCloud(tmp_path / "e2b", api_key=KEY)
    # Creation takes a while, as on E2B: two racing instances overlap.
    fake.create_delay = 0.3
    try:
        yield fake
    finally:
        await fake.aclose()


@pytest.fixture
def e2b_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "sandbox_backend": "e2b",
            "e2b_api_key": SecretStr(KEY),
            "sandbox_retry_backoff_seconds": 0.01,
            "sandbox_run_timeout_seconds": 20.0,
        }
    )


@pytest.fixture
async def redis_up() -> AsyncIterator[None]:
    client = Redis.from_url(SHARED_REDIS, socket_connect_timeout=0.5, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"Redis on 127.0.0.1:6379 is unreachable ({exc!r}); it runs on dev and CI")
    try:
        yield
    finally:
        async for key in client.scan_iter(match=PREFIX + "*"):
            await client.delete(key)
        await client.aclose()


Make = Callable[..., E2BSandboxService]


@pytest.fixture
async def instance(e2b_settings: Settings, cloud: FakeCloud, redis_up: None) -> AsyncIterator[Make]:
    """Makes service instances, each with its own Redis client, closed at the end."""
    made: list[tuple[E2BSandboxService, SharedRedis | None]] = []

    def make(*, redis_url: str | None = SHARED_REDIS) -> E2BSandboxService:
        shared = SharedRedis.connect(redis_url) if redis_url else None
        svc = E2BSandboxService(
            e2b_settings,
            sdk=cloud.sdk,  # type: ignore[arg-type]
            redis=shared,
            fleet_prefix=PREFIX,
        )
        made.append((svc, shared))
        return svc

    try:
        yield make
    finally:
        for svc, shared in made:
            await svc.aclose()
            if shared is not None:
                await shared.aclose()


async def test_two_instances_racing_for_one_conversation_make_one_sandbox(
    instance: Make, cloud: FakeCloud
) -> None:
    a, b = instance(), instance()
    first, second = await asyncio.gather(
        a.execute(cell("x = 41\nx"), owner=OWNER), b.execute(cell("y = 1\ny"), owner=OWNER)
    )
    assert cloud.creates == 1
    assert len(cloud.live()) == 1
    assert first.sandbox_id == second.sandbox_id
    # One kernel: what a run on one instance defined, a run on the other sees.
    assert text_of(await b.execute(cell("x + y"), owner=OWNER)) == "42"


async def test_without_shared_records_the_same_race_makes_two(
    instance: Make, cloud: FakeCloud
) -> None:
    """What the records prevent (and why the test above can fail): two lone processes."""
    a, b = instance(redis_url=None), instance(redis_url=None)
    await asyncio.gather(a.execute(cell("1"), owner=OWNER), b.execute(cell("2"), owner=OWNER))
    assert cloud.creates == 2


async def test_a_restart_on_one_instance_is_what_the_other_uses_next(
    instance: Make, cloud: FakeCloud
) -> None:
    a, b = instance(), instance()
    old = await a.execute(cell("x = 1\nx"), owner=OWNER)
    fresh = await b.execute(cell("x = 2\nx"), owner=OWNER, restart=True)
    assert fresh.sandbox_id != old.sandbox_id
    after = await a.execute(cell("x"), owner=OWNER)
    assert after.sandbox_id == fresh.sandbox_id
    assert text_of(after) == "2"
    assert cloud.creates == 2
    assert [s.sandbox_id for s in cloud.live()] == [fresh.sandbox_id]


async def test_shutdown_kills_only_what_the_instance_made_and_nobody_else_uses(
    instance: Make, cloud: FakeCloud
) -> None:
    a, b = instance(), instance()
    shared = await a.execute(cell("1"), owner=OWNER)  # made by a, then used by b
    await b.execute(cell("2"), owner=OWNER)
    own = await a.execute(cell("3"), owner="user-1:conversation-2")  # a's alone
    theirs = await b.execute(cell("4"), owner="user-2:conversation-3")  # b's alone
    await a.aclose()
    live = {s.sandbox_id for s in cloud.live()}
    assert shared.sandbox_id in live  # b still uses it
    assert theirs.sandbox_id in live  # never a's
    assert own.sandbox_id not in live  # a made it, nobody else used it
    # b goes on with the conversation's kernel after a has gone.
    assert text_of(await b.execute(cell("40 + 2"), owner=OWNER)) == "42"
    await b.aclose()
    live = {s.sandbox_id for s in cloud.live()}
    assert theirs.sandbox_id not in live
    # b did not make the shared one: it is left to E2B's timeout, as its maker decided.
    assert shared.sandbox_id in live


async def test_the_use_of_an_instance_whose_heartbeat_stopped_does_not_count(
    instance: Make, cloud: FakeCloud
) -> None:
    a, b = instance(), instance()
    made = await a.execute(cell("1"), owner=OWNER)
    await b.execute(cell("2"), owner=OWNER)
    assert b.fleet is not None
    # b's heartbeat ends (its key gone, as once its TTL runs out after a crash); b never
    # releases its use.
    await b.fleet.aclose()
    await a.aclose()
    assert made.sandbox_id not in {s.sandbox_id for s in cloud.live()}


async def test_redis_down_the_instance_works_alone(instance: Make, cloud: FakeCloud) -> None:
    import socket

    with socket.socket() as unused:  # bound, never listening: nothing answers there
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        a = instance(redis_url=f"redis://127.0.0.1:{port}/0")
        assert text_of(await a.execute(cell("x = 5\nx"), owner=OWNER)) == "5"
        assert text_of(await a.execute(cell("x * 2"), owner=OWNER)) == "10"
    assert cloud.creates == 1
