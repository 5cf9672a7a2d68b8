"""Failover: how long a failing provider delays the answer, and what the chain costs when
nothing fails.

- 5xx: the primary (OpenAI protocol) answers every request 503; the fallback (Anthropic
  protocol) answers. First `partial` p50/p99, against asking the fallback directly: the
  difference is the time from the 5xx to the fallback's first partial (goal <= 1 s at p99).
- stall: the primary accepts and never sends a token; with a short first-token timeout (printed)
  the first partial should come at timeout + <= 1 s.
- CPU per answer with the failover wrapper on the streaming path (a chain) and off (no chain),
  both healthy, measured in one run.

Providers are `python -m tests.fakes` processes; the app is `fragments serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.harness import ROOT, cpu_seconds, service
from bench.sse_client import StreamTiming, percentile, stream_chat

PRIMARY = ("openai", "gpt-4.1-mini")
FALLBACK = ("anthropic", "claude-sonnet-5-5")
CHAIN = f"{PRIMARY[0]}:{PRIMARY[1]},{FALLBACK[0]}:{FALLBACK[1]}"
STALL_TIMEOUT = 1.0


def body(provider: str, model: str) -> bytes:
    return json.dumps(
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Compute series"}]}],
            "template": "code-interpreter-v1",
            "model": {"id": model, "providerId": provider},
        }
    ).encode()


@contextlib.contextmanager
def fake(*args: str) -> Iterator[str]:
    """`python -m tests.fakes ARGS` in its own process; yields its URL (no path)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"the fake provider did not start: {line!r}")
        yield line.removeprefix("READY ").removesuffix("/v1")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


async def _many(port: int, payload: bytes, total: int, concurrency: int) -> list[StreamTiming]:
    results: list[StreamTiming] = []
    queue = iter(range(total))

    async def client() -> None:
        for _ in queue:
            results.append(await stream_chat("127.0.0.1", port, payload))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def _firsts(results: list[StreamTiming]) -> list[float]:
    return [r.first_partial * 1000 for r in results if r.first_partial is not None and r.ok]


def _line(label: str, results: list[StreamTiming]) -> tuple[float, float]:
    firsts = _firsts(results)
    failed = len(results) - len(firsts)
    p50, p99 = percentile(firsts, 50), percentile(firsts, 99)
    print(f"  {label:<44} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ({failed} failed)")
    return p50, p99


def _env(primary_url: str, fallback_url: str, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": f"{primary_url}/v1",
        "ANTHROPIC_BASE_URL": fallback_url,
        "ANTHROPIC_API_KEY": "bench-key",
        "FRAGMENTS_FAILOVER_CHAIN": CHAIN,
        "FRAGMENTS_PROVIDER_RETRIES": "1",
        # Every request meets the failure (the breaker would soon skip the primary outright;
        # that case is measured on its own below).
        "FRAGMENTS_BREAKER_FAILURES": "1000000",
        **extra,
    }


def run(requests: int = 100, concurrency: int = 10) -> None:
    print("\n(failover) a failing provider and the chain's cost")
    asked = body(*PRIMARY)
    direct = body(*FALLBACK)
    with tempfile.TemporaryDirectory() as tmp, fake("--delay", "0.02") as fallback:
        # 5xx
        with (
            fake("--fail-status", "503") as primary,
            service(0, 1, Path(tmp) / "a", _env(primary, fallback)) as (port, _),
        ):
            asyncio.run(_many(port, asked, 10, 5))  # warm-up
            base = _line(
                "fallback asked directly (no failure)",
                asyncio.run(_many(port, direct, requests, concurrency)),
            )
            failing = _line(
                "primary answers 503 -> fallback",
                asyncio.run(_many(port, asked, requests, concurrency)),
            )
            print(
                f"  => 5xx to the fallback's first partial: +{failing[0] - base[0]:.1f} ms p50, "
                f"+{failing[1] - base[1]:.1f} ms p99 (goal <= 1000 ms p99)"
            )
        # stall before the first token: every request waits for the timeout; then with the
        # breaker at its default, which opens after 5 failures and skips the primary.
        for label, breaker in (("", "1000000"), (", breaker on (5 failures)", "5")):
            with fake("--stall-after", "0") as primary:
                env = _env(
                    primary,
                    fallback,
                    FRAGMENTS_FIRST_EVENT_TIMEOUT_SECONDS=str(STALL_TIMEOUT),
                    FRAGMENTS_BREAKER_FAILURES=breaker,
                )
                with service(0, 1, Path(tmp) / f"b{breaker}", env) as (port, _):
                    asyncio.run(_many(port, direct, 5, 5))  # warm-up
                    stalled = _line(
                        f"primary stalls (timeout {STALL_TIMEOUT:g} s){label}",
                        asyncio.run(_many(port, asked, 20, concurrency)),
                    )
            if not label:
                over = stalled[1] - STALL_TIMEOUT * 1000
                print(
                    f"  => stall to the fallback's first partial: timeout + {over:.1f} ms p99 "
                    "(goal: timeout + <= 1000 ms)"
                )
        # CPU per answer, healthy, wrapper on and off
        cpu: dict[str, float] = {}
        for label, chain in (("off", ""), ("on", CHAIN)):
            env = _env(fallback, fallback, FRAGMENTS_FAILOVER_CHAIN=chain)
            env["OPENAI_API_KEY"] = "bench-key"
            with service(0, 1, Path(tmp) / f"c{label}", env) as (port, proc):
                asyncio.run(_many(port, asked, 10, 5))  # warm-up
                before = cpu_seconds(proc)
                results = asyncio.run(_many(port, asked, requests, 25))
                used = cpu_seconds(proc) - before
                ok = sum(1 for r in results if r.ok)
                cpu[label] = used / max(1, ok) * 1000
                print(
                    f"  failover wrapper {label:<3}: CPU {cpu[label]:6.1f} ms/answer ({ok} answers)"
                )
        print(f"  => CPU on/off: {cpu['on'] / cpu['off']:.2f}x")
