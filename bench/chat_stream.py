"""(a) server overhead to the first `partial`; (c) streaming CPU per answer and capacity."""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from bench.harness import cpu_seconds, fake_provider, service
from bench.sse_client import StreamTiming, chat_body, percentile, stream_chat

MODEL = "gpt-4.1-mini"


async def _closed_loop(port: int, body: bytes, total: int, concurrency: int) -> list[StreamTiming]:
    """`total` requests, `concurrency` in flight at a time."""
    results: list[StreamTiming] = []
    queue = iter(range(total))

    async def client() -> None:
        for _ in queue:
            results.append(await stream_chat("127.0.0.1", port, body))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def overhead(requests: int = 200) -> None:
    """Request to first `partial` with a provider that answers at once."""
    print("\n(a) server overhead: request -> first `partial`, provider answers at once")
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_provider(24, 0.0) as fport,
        service(fport, workers=1, data_dir=Path(tmp)) as (port, _),
    ):
        body = chat_body(MODEL)
        asyncio.run(_closed_loop(port, body, 20, 4))  # warm-up
        for concurrency in (1, 50):
            results = asyncio.run(_closed_loop(port, body, requests, concurrency))
            firsts = [r.first_partial * 1000 for r in results if r.first_partial is not None]
            failed = sum(1 for r in results if not r.ok)
            print(
                f"  concurrency {concurrency:>3}: "
                f"first partial p50 {percentile(firsts, 50):7.1f} ms"
                f"  p99 {percentile(firsts, 99):7.1f} ms  ({len(firsts)} measured, {failed} failed)"
            )


async def _hold_streams(
    port: int, body: bytes, streams: int, duration: float, stream_seconds: float
) -> list[StreamTiming]:
    """Keep `streams` answers in flight for `duration` s; starts are spread over one answer's
    length so the load is steady rather than a burst."""
    results: list[StreamTiming] = []
    deadline = time.perf_counter() + duration

    async def client() -> None:
        await asyncio.sleep(random.uniform(0, stream_seconds))
        while time.perf_counter() < deadline:
            results.append(await stream_chat("127.0.0.1", port, body))

    await asyncio.gather(*(client() for _ in range(streams)))
    return results


def capacity(
    workers: int, levels: tuple[int, ...] = (25, 50, 100, 200, 300), duration: float = 12.0
) -> None:
    """CPU per answer and first-partial p99 at several numbers of simultaneous streams."""
    print(
        f"\n(c) streaming capacity: ~3.2 KB answer in 24-char chunks every 20 ms, "
        f"{workers} worker(s)"
    )
    body = chat_body(MODEL)
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_provider(24, 0.02) as fport,
        service(fport, workers=workers, data_dir=Path(tmp)) as (port, proc),
    ):
        one = asyncio.run(_closed_loop(port, body, 3, 1))
        stream_seconds = sum(r.total for r in one) / len(one)
        print(f"  one answer streams in {stream_seconds:.2f} s")
        held = 0
        for streams in levels:
            before = cpu_seconds(proc)
            results = asyncio.run(_hold_streams(port, body, streams, duration, stream_seconds))
            used = cpu_seconds(proc) - before
            done = [r for r in results if r.ok]
            firsts = [r.first_partial * 1000 for r in results if r.first_partial is not None]
            p99 = percentile(firsts, 99)
            cpu_ms = used / max(1, len(done)) * 1000
            ok = p99 < 100 and len(done) == len(results)
            if ok:
                held = streams
            print(
                f"  {streams:>4} streams: {len(done):>5} answers, CPU {cpu_ms:6.1f} ms/answer, "
                f"first partial p50 {percentile(firsts, 50):6.1f} ms p99 {p99:7.1f} ms, "
                f"{len(results) - len(done)} failed {'ok' if ok else 'OVER'}"
            )
        print(
            f"  => holds {held} simultaneous streams with first-partial p99 < 100 ms "
            f"(target >= 200; CPU target <= 30 ms/answer)"
        )
