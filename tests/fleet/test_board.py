"""The job board (`fragments.jobs.board`) on real Redis: a job opened by one process is found,
with its owner and its events, by another process sharing the Redis (embedded `--workers N`);
with Redis unreachable an embedded board carries on in memory, and a fleet's answers a clear 503."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from fragments.config import Settings
from fragments.errors import FragmentsError
from fragments.jobs.board import Board, FleetBoard, MemoryJobOwners, RedisJobOwners, job_board
from fragments.jobs.events import MemoryJobEvents, RedisJobEvents
from fragments.jobs.keys import FleetKeys
from fragments.ports import JobOwner
from fragments.sandbox.live import follow_job
from fragments.sandbox.service import SandboxUnavailable
from tests.web.app_process import free_port

pytestmark = pytest.mark.anyio

OWNER = JobOwner("user-1", "team-1")


class NoSandboxes:
    """The board only asks which kind of sandbox service it serves (not the fleet's)."""

    async def check(self) -> None:
        raise SandboxUnavailable("no sandboxes in this test")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test-board-{secrets.token_hex(4)}:"
    yield prefix
    redis = Redis(decode_responses=True)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)
    await redis.aclose()


def embedded(settings: Settings, redis_url: str, prefix: str) -> Board:
    board = job_board(
        settings.model_copy(update={"redis_url": redis_url, "fleet_prefix": prefix}),
        NoSandboxes(),  # type: ignore[arg-type]
    )
    assert isinstance(board, Board)
    return board


async def test_another_process_finds_the_job_its_owner_and_its_events(
    settings: Settings, prefix: str
) -> None:
    first = embedded(settings, "redis://127.0.0.1:6379/0", prefix)
    second = embedded(settings, "redis://127.0.0.1:6379/0", prefix)
    try:
        await first.open("job-aaaaaaaa", OWNER)
        await first.publish("job-aaaaaaaa", "phase", {"phase": "running"})
        assert await second.owner("job-aaaaaaaa") == OWNER
        assert await second.owner("job-unknown1") is None

        async def finish() -> None:
            await asyncio.sleep(0.2)
            await first.publish("job-aaaaaaaa", "result", {"stdout": ["ok\n"]})

        finishing = asyncio.create_task(finish())
        seen = [e async for e in follow_job(second, "job-aaaaaaaa", within=30)]
        await finishing
        assert [e.type for e in seen] == ["phase", "phase", "result"]
        assert [e.data.get("phase") for e in seen[:2]] == ["queued", "running"]
        # From the second event on, as a re-attaching client asks.
        again = [e async for e in follow_job(second, "job-aaaaaaaa", after=seen[0].id, within=30)]
        assert [e.id for e in again] == [e.id for e in seen[1:]]
        assert await second.finished("job-aaaaaaaa")
    finally:
        await first.aclose()
        await second.aclose()


async def test_an_anonymous_job_has_no_owner_anyone_can_match(
    settings: Settings, prefix: str
) -> None:
    board = embedded(settings, "redis://127.0.0.1:6379/0", prefix)
    try:
        await board.open("job-anon0001", None)
        assert await board.owner("job-anon0001") is None
        assert len(await board.read("job-anon0001", "0-0", 0)) == 1
    finally:
        await board.aclose()


async def test_an_embedded_board_carries_on_in_memory_while_redis_is_down(
    settings: Settings, prefix: str
) -> None:
    board = embedded(settings, f"redis://127.0.0.1:{free_port()}/0", prefix)
    try:
        await board.open("job-bbbbbbbb", OWNER)
        await board.publish("job-bbbbbbbb", "result", {"stdout": []})
        assert await board.owner("job-bbbbbbbb") == OWNER
        events = [e async for e in follow_job(board, "job-bbbbbbbb", within=10)]
        assert [e.type for e in events] == ["phase", "result"]
        assert await board.finished("job-bbbbbbbb")
    finally:
        await board.aclose()


async def test_a_fleet_board_answers_a_clear_503_while_redis_is_down(prefix: str) -> None:
    redis = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5, decode_responses=True
    )
    keys = FleetKeys(prefix)
    board = FleetBoard(RedisJobEvents(redis, keys, 60), RedisJobOwners(redis, keys, 60))
    try:
        with pytest.raises(FragmentsError) as refused:
            await board.open("job-cccccccc", OWNER)
        assert refused.value.status_code == 503
        assert refused.value.code == "fleet_unavailable"
        assert refused.value.headers == {"Retry-After": "5"}
    finally:
        await board.aclose()
        await redis.aclose()


async def test_detached_work_outlives_a_cancelled_waiter() -> None:
    board = Board(MemoryJobEvents(), MemoryJobOwners())
    done = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(0.2)
        done.set()
        return "finished"

    started = board.detach(work())
    waiter = asyncio.create_task(asyncio.wait_for(asyncio.shield(started), 5))
    await asyncio.sleep(0.05)
    waiter.cancel()  # the request went away
    await asyncio.wait_for(done.wait(), 5)
    assert await started == "finished"
    await board.aclose()
