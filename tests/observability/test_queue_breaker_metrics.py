"""`/metrics` exports the fleet's queue (jobs per stream, the oldest job's age, dead letters) and
every circuit breaker's state, read from their sources at scrape time: jobs enqueued on real
Redis by the job queue's own code, a breaker tripped by real provider failures (memory) and one
tripped by another instance (shared in Redis)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from fragments.config import Settings
from fragments.jobs.keys import FleetKeys
from fragments.jobs.queue import Job, JobQueue
from fragments.jobs.registry import FleetRegistry, NodeInfo
from fragments.redis_client import SharedRedis
from fragments.resilience import KEY_PREFIX, BreakerConfig, BreakerRegistry
from tests.apps import app_client, client_state
from tests.chat.conftest import chat_body, parse_sse
from tests.fakes import ErrorReply, FakeOpenAI
from tests.modes import AuthMode, sign_in_for_mode
from tests.observability.metrics_text import Scrape

pytestmark = pytest.mark.anyio

TOKEN = "scrape-" + uuid.uuid4().hex
REDIS_URL = "redis://127.0.0.1:6379/0"


def breaker_state(found: Scrape, name: str) -> float | None:
    """A breaker's gauge (its label is `name`, which `Scrape.value` takes for itself)."""
    return found.samples.get(("fragments_breaker_state", frozenset({("name", name)})))


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return Scrape(response.text)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis(decode_responses=True, socket_timeout=10)
    try:
        await client.ping()
    except OSError:
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable (it runs on dev and CI machines)")
    yield client
    await client.aclose()


@pytest.fixture
async def keys(redis: Redis) -> AsyncIterator[FleetKeys]:
    prefix = f"test-queue-metrics-{secrets.token_hex(4)}:"
    yield FleetKeys(prefix)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)


async def test_queue_depth_per_stream_and_dead_letters(
    db_settings: Settings, auth_mode: AuthMode, redis: Redis, keys: FleetKeys
) -> None:
    settings = db_settings.model_copy(
        update={
            "embedded_node": False,
            "redis_url": REDIS_URL,
            "fleet_prefix": keys.prefix,
            "rate_limits": False,
            "metrics_token": SecretStr(TOKEN),
        }
    )
    node = "node-" + secrets.token_hex(3)
    own, shared = keys.node_jobs(node), keys.new_sandboxes
    registry = FleetRegistry(redis, keys, heartbeat_seconds=30)
    await registry.heartbeat(NodeInfo(node, "http://127.0.0.1:1", {"code-interpreter-v1": 0}))
    queue = JobQueue(redis, keys, max_jobs=10, max_attempts=3)
    async with app_client(settings) as client:
        await sign_in_for_mode(client, auth_mode)
        empty = await scrape(client)
        assert empty.value("fragments_queue_depth", stream="jobs:new") == 0
        assert empty.value("fragments_queue_dead_letters") == 0

        for _ in range(3):
            await queue.submit(own, Job("run", owner="o"))
        for _ in range(2):
            await queue.submit(shared, Job("prepare", owner="o", template="code-interpreter-v1"))
        # One of the shared jobs is given up: it leaves its stream for the dead letters.
        [delivery] = await queue.read(node, [shared], count=1, block=None)
        await queue.dead_letter(delivery, "gave up after 3 attempts")

        after = await scrape(client)
        assert after.value("fragments_queue_depth", stream=f"node:{node}:jobs") == 3
        assert after.value("fragments_queue_depth", stream="jobs:new") == 1
        assert after.value("fragments_queue_dead_letters") == 1
        # Ages come from the entries' ids (the server's clock): present and not negative.
        assert after.value("fragments_queue_oldest_job_seconds", stream=f"node:{node}:jobs") >= 0
        assert ("fragments_queue_oldest_job_seconds", frozenset({("stream", "jobs:new")})) in (
            after.samples
        )
        # The prefix is not part of the label.
        assert not any(keys.prefix in str(labels) for _, labels in after.samples)

        # The node's jobs are done and it retires: its stream reads 0, not its last depth.
        for delivery in await queue.read(node, [own], count=10, block=None):
            await queue.ack(delivery)
        await registry.retire(node)
        drained = await scrape(client)
        assert drained.value("fragments_queue_depth", stream=f"node:{node}:jobs") == 0


async def test_a_breaker_tripped_by_provider_failures_reads_open(
    chat_settings: Settings, auth_mode: AuthMode, fake_openai: FakeOpenAI
) -> None:
    # No Redis: each instance keeps its breakers in memory (the embedded default).
    settings = chat_settings.model_copy(
        update={
            "metrics_token": SecretStr(TOKEN),
            "breaker_failures": 2,
            "breaker_open_seconds": 600.0,
            "failover_chain": "",
            "response_cache": False,
            "rate_limits": False,
        }
    )
    async with app_client(settings) as client:
        await sign_in_for_mode(client, auth_mode)
        for n in range(2):
            fake_openai.script(ErrorReply(503, "overloaded"))
            response = await client.post("/api/chat", json=chat_body(f"app {n}"))
            assert parse_sse(response.text)[-1].name == "error", response.text
        found = await scrape(client)
    assert breaker_state(found, "provider:openai") == 2


async def test_a_breaker_another_instance_tripped_reads_open_here(
    db_settings: Settings, auth_mode: AuthMode, redis: Redis
) -> None:
    # A breaker name of this test's own: breaker keys in Redis are shared by every app on it.
    name = f"test-{uuid.uuid4().hex[:10]}"
    settings = db_settings.model_copy(
        update={"redis_url": REDIS_URL, "metrics_token": SecretStr(TOKEN)}
    )
    other = SharedRedis.connect(REDIS_URL)
    try:
        async with app_client(settings) as client:
            await sign_in_for_mode(client, auth_mode)
            client_state(client).breakers.breaker(name)  # this instance uses it
            closed = await scrape(client)
            assert breaker_state(closed, name) == 0

            elsewhere = BreakerRegistry(BreakerConfig(failures=1, open_seconds=600), other)
            breaker = elsewhere.breaker(name)
            await breaker.record_failure(await breaker.allow())

            tripped = await scrape(client)
            assert breaker_state(tripped, name) == 2
    finally:
        async for key in redis.scan_iter(match=f"{KEY_PREFIX}{{{name}}}*"):
            await redis.delete(key)
        await other.aclose()
