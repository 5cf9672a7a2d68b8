"""The breaker across processes: two worker processes (tests/resilience/breaker_worker.py)
call one failing fake service through breakers sharing Redis. After the open period the service
sees exactly one half-open probe out of 100 concurrent calls; with Redis killed mid-test each
process falls back to its own breaker and no call sees an error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from fragments.redis_client import SharedRedis
from fragments.resilience import BreakerConfig, CircuitBreaker
from tests.chat.test_rate_limits import _spawn_redis, _wait_redis, private_redis

pytestmark = pytest.mark.anyio

SHARED_REDIS = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]


class FakeService:
    """An HTTP service on 127.0.0.1 answering 500 (or 200 once healthy), counting requests;
    while `hold` is set, requests wait for `release()` before their answer."""

    def __init__(self) -> None:
        self.healthy = False
        self.hits = 0
        self.waiting = 0
        self._gate = asyncio.Event()
        self._gate.set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.hits += 1
            self.waiting += 1
            await self._gate.wait()
            self.waiting -= 1
            status = "200 OK" if self.healthy else "500 Internal Server Error"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def aclose(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.resilience.breaker_worker",
            *args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(proc)
        assert await worker.read() == {"ready": True}
        return worker

    async def send(self, command: dict[str, object]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()

    async def read(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        assert line, "the worker exited"
        message: dict[str, object] = json.loads(line)
        return message

    async def fire(self, n: int, *, concurrent: bool) -> list[str]:
        """Fire n calls and wait for all of them; their outcomes."""
        await self.send({"fire": n, "concurrent": concurrent})
        outcomes = []
        while "done" not in (message := await self.read()):
            outcomes.append(str(message["outcome"]))
        return outcomes

    async def state(self) -> str:
        await self.send({"state": True})
        return str((await self.read())["state"])

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.send({"quit": True})
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def service() -> AsyncIterator[FakeService]:
    svc = FakeService()
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()


@contextlib.asynccontextmanager
async def workers(*args: str) -> AsyncIterator[tuple[Worker, Worker]]:
    a = await Worker.start(*args)
    try:
        b = await Worker.start(*args)
        try:
            yield a, b
        finally:
            await b.aclose()
    finally:
        await a.aclose()


async def wait_for_state(breaker: CircuitBreaker, state: str) -> None:
    for _ in range(600):
        if await breaker.state() == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the breaker never became {state}")


async def burst_with_one_probe(service: FakeService, a: Worker, b: Worker) -> Counter[str]:
    """100 concurrent calls, 50 from each process, while the service holds what reaches it:
    every call but the probe has failed fast before the probe is answered."""
    service.hold()
    hits_before = service.hits
    seen: Counter[str] = Counter()

    async def collect(worker: Worker) -> None:
        await worker.send({"fire": 50, "concurrent": True})
        while "done" not in (message := await worker.read()):
            seen[str(message["outcome"])] += 1

    tasks = [asyncio.create_task(collect(a)), asyncio.create_task(collect(b))]
    for _ in range(2400):
        # Every task done, not any: one process may answer its 50 before the other's arrive.
        if sum(seen.values()) >= 99 or all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    assert seen == {"open": 99}, seen
    assert service.hits - hits_before == 1  # exactly one probe reached the service
    assert service.waiting == 1
    service.release()
    await asyncio.gather(*tasks)
    assert service.hits - hits_before == 1
    return seen


async def test_one_half_open_probe_across_two_processes(service: FakeService) -> None:
    prefix = f"test:breaker:{uuid.uuid4().hex}:"
    shared = SharedRedis.connect(SHARED_REDIS)
    try:
        await shared.client.ping()
    except OSError as exc:  # pragma: no cover - Redis runs on the dev and CI machines
        await shared.aclose()
        pytest.skip(f"Redis at 127.0.0.1:6379 is unreachable ({exc})")
    # The test's own view of the same breaker (a third instance).
    observer = CircuitBreaker(
        "service", BreakerConfig(failures=5, open_seconds=1.0), shared, prefix=prefix
    )
    args = ("--redis", SHARED_REDIS, "--service", service.url, "--prefix", prefix)
    args += ("--failures", "5", "--open", "1", "--probe-timeout", "60")
    try:
        async with workers(*args) as (a, b):
            # 3 failures in one process and 2 in the other open the one shared breaker.
            assert await a.fire(3, concurrent=False) == ["failed"] * 3
            assert await b.state() == "closed"
            assert await b.fire(2, concurrent=False) == ["failed"] * 2
            assert await a.state() == "open"
            assert service.hits == 5
            # Half-open, the service still failing: one probe, 99 fast failures, open again.
            await wait_for_state(observer, "half_open")
            assert await burst_with_one_probe(service, a, b) == {"open": 99, "failed": 1}
            assert await a.state() == await b.state() == "open"
            # The service recovers: the next probe closes the breaker for everyone.
            service.healthy = True
            await wait_for_state(observer, "half_open")
            assert await burst_with_one_probe(service, a, b) == {"open": 99, "ok": 1}
            assert await b.state() == "closed"
            hits = service.hits
            both = await asyncio.gather(a.fire(50, concurrent=True), b.fire(50, concurrent=True))
            assert Counter(both[0] + both[1]) == {"ok": 100}
            assert service.hits - hits == 100
    finally:
        keys = [k async for k in shared.client.scan_iter(match=prefix + "*")]
        if keys:
            await shared.client.delete(*keys)
        await shared.aclose()


async def test_redis_killed_mid_test_each_process_keeps_its_own_breaker(
    service: FakeService,
) -> None:
    with private_redis() as (port, proc):
        await _wait_redis(port)
        url = f"redis://127.0.0.1:{port}/0"
        args = ("--redis", url, "--service", service.url, "--prefix", "breaker:")
        args += ("--failures", "3", "--open", "60", "--redis-retry", "0.5")
        async with workers(*args) as (a, b):
            assert await a.fire(2, concurrent=False) == ["failed"] * 2
            redis = Redis(port=port)
            assert await redis.exists("breaker:{service}:failures") == 1  # shared so far
            await redis.aclose()
            proc.kill()
            proc.wait(10)
            # Each process now counts on its own: 3 failures reach the service from each,
            # then its own breaker fails fast. No call sees a Redis error.
            assert await a.fire(5, concurrent=False) == ["failed"] * 3 + ["open"] * 2
            assert await b.fire(5, concurrent=False) == ["failed"] * 3 + ["open"] * 2
            assert service.hits == 2 + 3 + 3
            assert await a.state() == await b.state() == "open"
            # Redis is back (empty): once the outage verdict lapses, the shared breaker
            # (closed) decides again, whatever the processes' own breakers say.
            with _spawn_redis(port) as again:
                try:
                    await _wait_redis(port)
                    await asyncio.sleep(0.6)  # past the workers' 0.5 s outage verdict
                    assert await a.state() == "closed"
                    assert await a.fire(1, concurrent=False) == ["failed"]
                    redis = Redis(port=port)
                    assert await redis.zcard("breaker:{service}:failures") == 1
                    await redis.aclose()
                finally:
                    again.terminate()
                    again.wait(10)
