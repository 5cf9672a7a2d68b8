"""A live node takes back a job of its own stream that it dropped (its handler lost Redis
half-way, so the entry stayed pending with no task running it): once idle for
FRAGMENTS_JOB_RECLAIM_IDLE_SECONDS it runs again, while a job it is running (heart-beaten) is
never taken twice. Real Redis, a key prefix per test."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from fragments.config import Settings
from fragments.jobs.events import follow
from fragments.jobs.keys import FleetKeys
from fragments.jobs.queue import Job
from fragments.jobs.worker import NodeWorker
from fragments.sandbox.local.service import LocalSandboxService

pytestmark = pytest.mark.anyio


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
    prefix = f"test-own-reclaim-{secrets.token_hex(4)}:"
    yield FleetKeys(prefix)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)


async def test_a_dropped_job_on_a_live_nodes_own_stream_runs_again(
    tmp_path: Path, redis: Redis, keys: FleetKeys
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        fleet_prefix=keys.prefix,
        job_reclaim_idle_seconds=0.3,
        sandbox_pool_sizes={},
    )
    service = LocalSandboxService(settings)
    worker = NodeWorker(settings, redis, service, node_id="n1", url="http://127.0.0.1:1")
    try:
        stream = keys.node_jobs("n1")
        dropped, running = Job("kill", sandbox_id="gone"), Job("kill", sandbox_id="busy")
        await worker.queue.submit(stream, dropped)
        await worker.queue.submit(stream, running)
        # Both delivered to this node; the second is running (heart-beaten), the first was
        # dropped by a handler that lost Redis.
        [lost, held] = await worker.queue.read("n1", [stream], count=2, block=None)
        worker.running[running.id] = held
        for _ in range(3):
            await asyncio.sleep(0.2)
            await worker.beat()
        await worker.reclaim()
        answered = [e.data async for e in follow(worker.events, dropped.id, within=10)]
        assert answered == [{"ok": False}]
        assert await worker.events.read(running.id) == []  # still its running task's
        # The result is published before the entry is acknowledged: wait for the ack.
        for _ in range(100):
            if await worker.queue.depth(stream) == 1:
                break
            await asyncio.sleep(0.05)
        assert await worker.queue.depth(stream) == 1
        assert lost.job == dropped
    finally:
        await service.aclose()
