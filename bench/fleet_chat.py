"""(fleet) Many concurrent chat streams across two API processes of a fleet, on one machine.

Two real `fragments serve` processes (FRAGMENTS_EMBEDDED_NODE=false: the API tier, no
sandboxes) on loopback share a fresh PostgreSQL database and Redis (a key prefix per run), as
a fleet's API tier does; a fake OpenAI-compatible provider (bench/fake_stream.py) answers every
request with a ~3.2 KB fragment in 24-character chunks every 20 ms (~2.8 s an answer).
`streams` requests arrive evenly over `spread` seconds, alternating between the two
processes (a round-robin load balancer), driven by two client processes so the load generator
is not the bottleneck. Printed: answers and errors, first `partial` p50/p99 from the request's
send, and the API processes' CPU per answer (user + system, both processes, over the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import psutil
from redis import Redis

from bench.harness import cpu_seconds, fake_provider, service
from bench.pg import fresh_database
from bench.sse_client import chat_body, percentile, stream_chat

MODEL = "gpt-4.1-mini"
API_PROCESSES = 2

# (first partial or None, total seconds, ok, error) per stream.
Outcome = tuple[float | None, float, bool, str | None]


async def _drive_async(port: int, starts: list[float]) -> list[Outcome]:
    body = chat_body(MODEL)

    async def one(at: float) -> Outcome:
        await asyncio.sleep(max(0.0, at - time.time()))
        timing = await stream_chat("127.0.0.1", port, body)
        return timing.first_partial, timing.total, timing.ok, timing.error

    return list(await asyncio.gather(*(one(at) for at in starts)))


def _drive(port: int, starts: list[float]) -> list[Outcome]:
    """One client process: a stream to `port` at each wall-clock time in `starts`."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_drive_async(port, starts))


def _cpu_of_the_rest(apis: list[tuple[int, psutil.Process]]) -> float:
    """CPU seconds of this bench's other processes: the fake provider and the clients."""
    served = {proc.pid for _, proc in apis}
    for _, proc in apis:
        with contextlib.suppress(psutil.NoSuchProcess):
            served.update(child.pid for child in proc.children(recursive=True))
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        if child.pid not in served:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = child.cpu_times()
                total += times.user + times.system
    return total


def _cpu_of_stores() -> float:
    """CPU seconds of the machine's PostgreSQL and Redis server processes (shared by everyone
    on the machine: an upper bound of what this run cost them)."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "redis-server"):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def _busy_fraction(before: Any, after: Any) -> float:
    """The share of the machine's CPU time spent busy between two psutil.cpu_times()."""
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (
        before.idle + getattr(before, "iowait", 0.0)
    )
    total = sum(after) - sum(before)
    return 1.0 - idle / total if total > 0 else float("nan")


def _drop_keys(prefix: str) -> None:
    redis = Redis()
    for key in redis.scan_iter(match=f"{prefix}*"):
        redis.delete(key)
    redis.close()


def run(streams: int = 1000, spread: float = 6.0) -> None:
    print(
        f"\n(fleet) {streams} chat streams across {API_PROCESSES} API processes "
        f"(`fragments serve`, PostgreSQL + Redis, no embedded node), arrivals over {spread:.0f} s"
        "; ~3.2 KB answer in 24-char chunks every 20 ms"
    )
    prefix = f"bench-chat-{secrets.token_hex(4)}:"
    env = {
        "FRAGMENTS_REDIS_URL": "redis://127.0.0.1:6379/0",
        "FRAGMENTS_FLEET_PREFIX": prefix,
        "FRAGMENTS_EMBEDDED_NODE": "false",
    }
    with ExitStack() as stack:
        db = stack.enter_context(fresh_database())
        fport = stack.enter_context(fake_provider(24, 0.02))
        apis = []
        for _ in range(API_PROCESSES):
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            apis.append(
                stack.enter_context(service(fport, 1, data_dir, extra_env={**env, **db.env()}))
            )
        pool = stack.enter_context(
            ProcessPoolExecutor(max_workers=API_PROCESSES, mp_context=get_context("spawn"))
        )
        stack.callback(_drop_keys, prefix)
        # Warm-up: every process's first requests pay for imports and connections.
        for port, _ in apis:
            pool.submit(_drive, port, [time.time()] * 4).result()
        begin = time.time() + 2.0  # the clients' processes are up by then
        gap = spread / streams
        plans = [
            (port, [begin + k * gap for k in range(streams) if k % API_PROCESSES == i])
            for i, (port, _) in enumerate(apis)
        ]
        cpu_before = sum(cpu_seconds(proc) for _, proc in apis)
        rest_before = _cpu_of_the_rest(apis)
        stores_before = _cpu_of_stores()
        machine_before = psutil.cpu_times()
        futures = [pool.submit(_drive, port, starts) for port, starts in plans]
        outcomes = [o for future in futures for o in future.result()]
        wall = time.time() - begin
        cpu_used = sum(cpu_seconds(proc) for _, proc in apis) - cpu_before
        rest_used = _cpu_of_the_rest(apis) - rest_before
        stores_used = _cpu_of_stores() - stores_before
        busy = _busy_fraction(machine_before, psutil.cpu_times())
    ok = [o for o in outcomes if o[2]]
    firsts = [o[0] * 1000 for o in outcomes if o[0] is not None]
    errors = Counter(o[3] or "no done event" for o in outcomes if not o[2])
    p99 = percentile(firsts, 99)
    verdict = "met" if not errors and p99 <= 250 else "NOT met"
    print(
        f"  {len(ok)} answers in {wall:.1f} s, {sum(errors.values())} errors"
        f"{' ' + dict(errors).__repr__() if errors else ''}\n"
        f"  first partial p50 {percentile(firsts, 50):6.1f} ms  p99 {p99:6.1f} ms  "
        f"(goal p99 <= 250 ms, 0 errors: {verdict})\n"
        f"  API CPU {cpu_used / max(1, len(ok)) * 1000:5.1f} ms per answer "
        f"({cpu_used:.1f} CPU-s over both processes); load generator (fake provider + "
        f"clients) {rest_used:.1f} CPU-s; PostgreSQL + Redis {stores_used:.1f} CPU-s;\n"
        f"  the machine's {psutil.cpu_count()} CPUs "
        f"{busy * 100:.0f}% busy during the run (everything on it)"
    )


if __name__ == "__main__":
    run()
