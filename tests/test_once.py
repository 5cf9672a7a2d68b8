"""Once per fleet: of the instances sharing a guard, one runs the job and the others skip it
until its period is over; a holder killed with SIGKILL does not block the others for good.

Instances are separate Redis clients, and real processes where a holder has to die: the
shared Redis on 127.0.0.1:6379 under a key prefix of this run's own; a port nobody listens on
for the outage; the file guard in a temporary folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from fragments.once import FileOnce, Outcome, RedisOnce, once_guard
from fragments.redis_client import SharedRedis
from fragments.sandbox.local.host import remove_stale_once

pytestmark = pytest.mark.anyio

SHARED_REDIS = "redis://127.0.0.1:6379/0"
PREFIX = f"test-{secrets.token_hex(4)}:once:"
HOUR = 3600.0


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


@pytest.fixture
async def instances(redis_up: None) -> AsyncIterator[list[SharedRedis]]:
    """Two instances' own Redis clients."""
    clients = [SharedRedis.connect(SHARED_REDIS) for _ in range(2)]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


class Counter:
    """A job that counts its runs and, when asked, waits for a go."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.hold = hold

    async def __call__(self) -> None:
        self.runs += 1
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()


def name() -> str:
    return f"job-{secrets.token_hex(3)}"


# ---- Redis ----------------------------------------------------------------------------------


async def test_one_instance_runs_while_the_other_skips_then_the_period_holds(
    instances: list[SharedRedis],
) -> None:
    first, second = (RedisOnce(r, prefix=PREFIX, lock_seconds=5) for r in instances)
    job = name()
    go = asyncio.Event()
    running = Counter(hold=go)
    task = asyncio.create_task(first.run(job, HOUR, running))
    await running.started.wait()
    other = Counter()
    assert await second.run(job, HOUR, other) == "skipped"
    go.set()
    assert await task == "ran"
    # Done for the period: nobody runs it again, the first instance included.
    assert await second.run(job, HOUR, other) == "skipped"
    assert await first.run(job, HOUR, other) == "skipped"
    assert (running.runs, other.runs) == (1, 0)


async def test_a_failed_job_lets_another_instance_run_it(instances: list[SharedRedis]) -> None:
    first, second = (RedisOnce(r, prefix=PREFIX, lock_seconds=5) for r in instances)
    job = name()

    async def broken() -> None:
        raise RuntimeError("database away")

    with pytest.raises(RuntimeError, match="database away"):
        await first.run(job, HOUR, broken)
    again = Counter()
    assert await second.run(job, HOUR, again) == "ran"
    assert again.runs == 1


async def test_a_long_job_keeps_its_lease(instances: list[SharedRedis]) -> None:
    """The lease is renewed while the job runs: a job longer than the lease is not run twice."""
    # A lease of 2 s renewed every ~0.7 s: loose enough for a loaded machine, and the job
    # below still outlives it twice over.
    first, second = (RedisOnce(r, prefix=PREFIX, lock_seconds=2.0) for r in instances)
    job = name()
    go = asyncio.Event()
    running = Counter(hold=go)
    task = asyncio.create_task(first.run(job, HOUR, running))
    try:
        await running.started.wait()
        other = Counter()
        for _ in range(4):  # several lease lengths in all
            await asyncio.sleep(1.0)
            assert await second.run(job, HOUR, other) == "skipped"
        go.set()
        assert await task == "ran"
        assert other.runs == 0
    finally:
        go.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from fragments.once import FileOnce, RedisOnce
    from fragments.redis_client import SharedRedis

    async def main():
        kind, where, job = sys.argv[1:4]
        if kind == "redis":
            guard = RedisOnce(SharedRedis.connect(where), prefix=sys.argv[4], lock_seconds=1.0)
        else:
            guard = FileOnce(Path(where))

        async def hold():
            print("holding", flush=True)
            await asyncio.Event().wait()

        await guard.run(job, 3600.0, hold)

    asyncio.run(main())
    """
)


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes that take a guard and hold it; killed at the end whatever happens."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def hold_in_process(started: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *args], stdout=subprocess.PIPE, text=True
    )
    started.append(process)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    return process


async def eventually(
    attempt: Callable[[], Awaitable[Outcome]], want: Outcome, *, tries: int = 100
) -> Outcome:
    """Call `attempt()` until it answers `want` (a bounded wait, not a timing claim)."""
    outcome: Outcome = "skipped"
    for _ in range(tries):
        outcome = await attempt()
        if outcome == want:
            break
        await asyncio.sleep(0.1)
    return outcome


async def test_a_killed_holder_blocks_the_others_only_until_its_lease_ends(
    instances: list[SharedRedis], holder: list[subprocess.Popen[str]]
) -> None:
    job = name()
    process = hold_in_process(holder, "redis", SHARED_REDIS, job, PREFIX)
    guard = RedisOnce(instances[0], prefix=PREFIX)
    counter = Counter()
    assert await guard.run(job, HOUR, counter) == "skipped"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert await eventually(lambda: guard.run(job, HOUR, counter), "ran") == "ran"
    assert counter.runs == 1


async def test_redis_unreachable_skips_the_round() -> None:
    with socket_free_port() as port:
        shared = SharedRedis.connect(f"redis://127.0.0.1:{port}/0")
        try:
            counter = Counter()
            guard = RedisOnce(shared, prefix=PREFIX)
            assert await guard.run(name(), HOUR, counter) == "unavailable"
            # The outage verdict then spares the next rounds the connect timeout.
            assert shared.available() is None
            assert await guard.run(name(), HOUR, counter) == "unavailable"
            assert counter.runs == 0
        finally:
            await shared.aclose()


class socket_free_port:
    """A loopback port nothing listens on (bound, never listened, so nobody can take it)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# ---- one machine without Redis ------------------------------------------------------------


async def test_the_file_guard_runs_once_a_period(tmp_path: Path) -> None:
    first, second = FileOnce(tmp_path), FileOnce(tmp_path)
    counter = Counter()
    assert await first.run("purge", HOUR, counter) == "ran"
    assert await second.run("purge", HOUR, counter) == "skipped"
    assert counter.runs == 1
    # A period that is over lets the next one run.
    assert await second.run("purge", 0.0, counter) == "ran"
    assert counter.runs == 2


async def test_the_file_guard_skips_while_another_process_holds_it_and_not_after_it_died(
    tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    process = hold_in_process(holder, "file", str(tmp_path), "purge")
    guard = FileOnce(tmp_path)
    counter = Counter()
    assert await guard.run("purge", HOUR, counter) == "skipped"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # The kernel dropped the dead holder's lock; it never finished, so no period started.
    assert await guard.run("purge", HOUR, counter) == "ran"
    assert counter.runs == 1


async def test_a_failed_job_leaves_no_period_mark(tmp_path: Path) -> None:
    guard = FileOnce(tmp_path)

    async def broken() -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        await guard.run("purge", HOUR, broken)
    counter = Counter()
    assert await guard.run("purge", HOUR, counter) == "ran"


def test_the_guard_follows_the_settings(tmp_path: Path) -> None:
    assert isinstance(once_guard(None, tmp_path), FileOnce)
    shared = SharedRedis.connect(SHARED_REDIS)
    assert isinstance(once_guard(shared, tmp_path), RedisOnce)


# ---- local sandbox orphans: one cleaner per machine ---------------------------------------

FLOCK_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("holding", flush=True)
    time.sleep(3600)
    """
)


def test_orphan_cleanup_runs_in_one_process_of_a_machine_at_a_time(
    tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    root = tmp_path / "sandboxes"
    stale = root / "run" / "999999999-dead00"
    stale.mkdir(parents=True)
    process = subprocess.Popen(
        [sys.executable, "-c", FLOCK_HOLDER, str(root / ".cleanup.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    holder.append(process)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    assert remove_stale_once(root) is False
    assert stale.exists()  # the other cleaner's to remove
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert remove_stale_once(root) is True
    assert not stale.exists()
