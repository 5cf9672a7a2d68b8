"""The job queue and job events on real Redis (a key prefix per test), and the in-process
events: backpressure, reclaim of a dead consumer's jobs, heart-beats that keep a running job
its own, dead letters after too many attempts, and events replayed from any id."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from fragments.config import Settings
from fragments.jobs.events import START, JobEvents, MemoryJobEvents, RedisJobEvents, follow
from fragments.jobs.keys import FleetKeys
from fragments.jobs.queue import Job, JobQueue, QueueFull
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
    prefix = f"test-queue-{secrets.token_hex(4)}:"
    yield FleetKeys(prefix)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)


def queue_of(redis: Redis, keys: FleetKeys, max_jobs: int = 10, attempts: int = 3) -> JobQueue:
    return JobQueue(redis, keys, max_jobs=max_jobs, max_attempts=attempts)


async def test_a_full_stream_refuses_a_job_with_retry_after(redis: Redis, keys: FleetKeys) -> None:
    queue = queue_of(redis, keys, max_jobs=2)
    stream = keys.node_jobs("n1")
    await queue.submit(stream, Job("run"))
    await queue.submit(stream, Job("run"))
    with pytest.raises(QueueFull) as refused:
        await queue.submit(stream, Job("run"))
    assert refused.value.status_code == 503
    assert refused.value.headers["Retry-After"]
    assert await queue.depth(stream) == 2
    # A job done makes room again: acknowledged entries leave the stream.
    [delivery, _] = await queue.read("n1", [stream], count=2, block=None)
    await queue.ack(delivery)
    await queue.submit(stream, Job("run"))
    assert await queue.depth(stream) == 2


async def test_a_dead_consumers_job_is_reclaimed_once_idle_and_a_live_ones_is_not(
    redis: Redis, keys: FleetKeys
) -> None:
    queue = queue_of(redis, keys)
    stream = keys.new_sandboxes
    job = Job("run", owner="o1")
    await queue.submit(stream, job)
    [taken] = await queue.read("alive", [stream], count=10, block=None)
    assert taken.job == job
    # Nothing for anyone else: it is delivered, not yet idle.
    assert await queue.read("other", [stream], count=10, block=None) == []
    assert await queue.reclaim(stream, "other", min_idle=0.3) == []
    # The consumer heart-beats it while running: still not idle.
    for _ in range(3):
        await asyncio.sleep(0.2)
        await queue.touch("alive", [taken])
    assert await queue.reclaim(stream, "other", min_idle=0.3) == []
    # It stops beating (it died): the job is taken over, once.
    await asyncio.sleep(0.4)
    [reclaimed] = await queue.reclaim(stream, "other", min_idle=0.3)
    assert reclaimed.job == job
    assert reclaimed.entry_id == taken.entry_id
    assert await queue.reclaim(stream, "third", min_idle=0.3) == []


async def test_jobs_added_before_any_node_reads_are_not_skipped(
    redis: Redis, keys: FleetKeys
) -> None:
    queue = queue_of(redis, keys)
    stream = keys.node_jobs("late")
    jobs = [Job("run"), Job("prepare", owner="o", template="code-interpreter-v1")]
    for job in jobs:
        await queue.submit(stream, job)
    await queue.ensure_group(stream)  # a node starting later
    delivered = await queue.read("late", [stream], count=10, block=None)
    assert [d.job for d in delivered] == jobs


@pytest.fixture
def node_settings(tmp_path: Path, keys: FleetKeys) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        fleet_prefix=keys.prefix,
        job_max_attempts=2,
        sandbox_pool_sizes={},
    )


async def test_a_job_past_its_attempts_goes_to_the_dead_letters_and_its_caller_hears(
    redis: Redis, keys: FleetKeys, node_settings: Settings
) -> None:
    service = LocalSandboxService(node_settings)
    worker = NodeWorker(node_settings, redis, service, node_id="n1", url="http://127.0.0.1:1")
    try:
        stream = keys.node_jobs("n1")
        job = Job("kill", sandbox_id="nope")
        for attempt in range(1, 4):
            await worker.queue.submit(stream, job)
            [delivery] = await worker.queue.read("n1", [stream], count=1, block=None)
            if attempt < 3:
                # Earlier attempts died with their node before answering.
                await worker.queue.begin_attempt(job.id, 60)
                continue
            await worker.handle(delivery)
        events = await worker.events.read(job.id)
        assert [e.type for e in events] == ["error"]
        assert events[0].data["error"] == "job_failed"
        dead = await redis.xrange(keys.dead_letters)
        assert len(dead) == 1
        assert Job.load(dead[0][1]["job"]) == job
        assert "attempts" in dead[0][1]["reason"]
    finally:
        await service.aclose()


async def test_a_finished_job_delivered_again_is_not_run_again(
    redis: Redis, keys: FleetKeys, node_settings: Settings
) -> None:
    service = LocalSandboxService(node_settings)
    worker = NodeWorker(node_settings, redis, service, node_id="n1", url="http://127.0.0.1:1")
    try:
        stream = keys.node_jobs("n1")
        job = Job("kill", sandbox_id="nope")
        await worker.queue.submit(stream, job)
        [delivery] = await worker.queue.read("n1", [stream], count=1, block=None)
        await worker.handle(delivery)
        assert [e.data for e in await worker.events.read(job.id)] == [{"ok": False}]
        # Delivered again (a reclaim after its node died before acknowledging it).
        await worker.queue.submit(stream, job)
        [again] = await worker.queue.read("n1", [stream], count=1, block=None)
        await worker.handle(again)
        assert len(await worker.events.read(job.id)) == 1
        assert await worker.queue.depth(stream) == 0
        # An unreadable entry goes straight to the dead letters.
        await redis.xadd(stream, {"job": "not json"})
        [junk] = await worker.queue.read("n1", [stream], count=1, block=None)
        await worker.handle(junk)
        assert await redis.xlen(keys.dead_letters) == 1
    finally:
        await service.aclose()


@pytest.fixture(params=["redis", "memory"])
async def events(request: pytest.FixtureRequest, redis: Redis, keys: FleetKeys) -> JobEvents:
    if request.param == "memory":
        return MemoryJobEvents()
    return RedisJobEvents(redis, keys, ttl_seconds=60)


async def test_job_events_replay_from_any_id_and_follow_ends_at_the_result(
    events: JobEvents,
) -> None:
    job_id = secrets.token_hex(4)
    assert not await events.finished(job_id)
    first = await events.publish(job_id, "phase", {"phase": "acquiring"})
    await events.publish(job_id, "phase", {"phase": "running"})

    async def finish() -> None:
        await asyncio.sleep(0.2)
        await events.publish(job_id, "result", {"stdout": ["1\n"]})

    task = asyncio.create_task(finish())
    seen = [e async for e in follow(events, job_id, within=10)]
    await task
    assert [e.type for e in seen] == ["phase", "phase", "result"]
    assert await events.finished(job_id)
    # A client re-attaching after the first event gets the rest, in order.
    replay = [e async for e in follow(events, job_id, after=first, within=10)]
    assert [e.data for e in replay] == [{"phase": "running"}, {"stdout": ["1\n"]}]
    assert [e.id for e in await events.read(job_id, START)] == [e.id for e in seen]
    with pytest.raises(TimeoutError):
        async for _ in follow(events, "no-such-job", within=0.3):
            pass
