"""(g) What logs, metrics and traces cost: streaming CPU per answer and warm interpreter-run
latency with all of it on (every trace exported over OTLP/HTTP to a local endpoint) and off
(FRAGMENTS_OBSERVABILITY=false), in one run; and on with one trace in ten sampled
(`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, the production recommendation), for the figure.

Three services run side by side against one paced fake provider; the rounds alternate between
them so drift on a shared machine falls on all. Goal: at most 10 % more CPU per answer, all on
against off."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil

from bench.harness import cpu_seconds, fake_provider, service
from bench.sse_client import chat_body, percentile, stream_chat
from bench.tracing import otlp_sink

MODEL = "gpt-4.1-mini"
ROUNDS = 5
ANSWERS_PER_ROUND = 60
CONCURRENCY = 20
WARM_RUNS = 20


async def _answers(port: int, body: bytes, total: int) -> int:
    queue = iter(range(total))
    ok = 0

    async def client() -> None:
        nonlocal ok
        for _ in queue:
            timing = await stream_chat("127.0.0.1", port, body)  # awaited before `ok` is read
            ok += timing.ok

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return ok


def _cpu_per_answer(port: int, proc: psutil.Process, body: bytes) -> tuple[float, int]:
    """CPU seconds of the service per answer over one round, and the answers that completed."""
    before = cpu_seconds(proc)
    ok = asyncio.run(_answers(port, body, ANSWERS_PER_ROUND))
    return (cpu_seconds(proc) - before) / max(ok, 1), ok


def _warm_client(port: int) -> tuple[httpx.Client, dict[str, object]]:
    """A guest's client and a run body for its conversation, run once (its kernel starts)."""
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    token = client.post("/api/auth/guest").json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    conversation = client.post("/api/conversations", json={"title": "bench"}).json()["id"]
    body: dict[str, object] = {
        "fragment": {"template": "code-interpreter-v1", "code": "print(sum(range(100)))"},
        "conversation_id": conversation,
    }
    first = client.post("/api/sandbox", json=body)
    if first.status_code != 200 or json.loads(first.text).get("error"):
        raise RuntimeError(f"the bench run failed: {first.text[:300]}")
    return client, body


def _timed_run(client: httpx.Client, body: dict[str, object]) -> float:
    start = time.perf_counter()
    client.post("/api/sandbox", json=body).raise_for_status()
    return time.perf_counter() - start


def run() -> None:
    print(
        "\n(g) observability cost: logs + metrics + traces (OTLP/HTTP to a local endpoint) on vs "
        "all off, and on with 10 % of the traces sampled; "
        f"{ROUNDS} alternating rounds of {ANSWERS_PER_ROUND} paced answers "
        f"({CONCURRENCY} at a time), then {WARM_RUNS} warm interpreter runs each"
    )
    common = {"FRAGMENTS_SANDBOX_POOL_SIZES": "{}"}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        fport = stack.enter_context(fake_provider(24, 0.02))
        endpoint = stack.enter_context(otlp_sink())
        services = {}
        traced = {
            **common,
            "FRAGMENTS_OBSERVABILITY": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        }
        envs = {
            # Every trace recorded and exported: the worst case the goal is about.
            "on": {**traced, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
            "on, 10 %": {
                **traced,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.1",
            },
            "off": {**common, "FRAGMENTS_OBSERVABILITY": "false"},
        }
        for number, (name, env) in enumerate(envs.items()):
            data = tmp / str(number)
            data.mkdir()
            services[name] = stack.enter_context(service(fport, 1, data, env))
        body = chat_body(MODEL)
        for port, _ in services.values():
            asyncio.run(_answers(port, body, 20))  # warm-up, not measured
        cpu: dict[str, list[float]] = {name: [] for name in services}
        answers = dict.fromkeys(services, 0)
        names = list(services)
        for number in range(ROUNDS):
            # Each round starts with another service: none always runs first (or last).
            for name in names[number % len(names) :] + names[: number % len(names)]:
                port, proc = services[name]
                per_answer, ok = _cpu_per_answer(port, proc, body)
                cpu[name].append(per_answer)
                answers[name] += ok
        # Warm runs alternate between the two services too.
        clients = {name: _warm_client(port) for name, (port, _) in services.items()}
        warm: dict[str, list[float]] = {name: [] for name in services}
        for _ in range(WARM_RUNS):
            for name, (client, run_body) in clients.items():
                warm[name].append(_timed_run(client, run_body))
        for client, _ in clients.values():
            client.close()
    on, off = statistics.median(cpu["on"]), statistics.median(cpu["off"])
    for name in services:
        print(
            f"  {name:>8}: CPU per answer median {statistics.median(cpu[name]) * 1000:6.2f} ms "
            f"(rounds: {', '.join(f'{c * 1000:.2f}' for c in cpu[name])}; "
            f"{answers[name]} answers) | warm run p50 {percentile(warm[name], 50) * 1000:6.1f} ms"
            f" p95 {percentile(warm[name], 95) * 1000:6.1f} ms"
        )
    sampled = statistics.median(cpu["on, 10 %"])
    verdict = "within" if on <= off * 1.10 else "OVER"
    w_on, w_off = percentile(warm["on"], 50), percentile(warm["off"], 50)
    print(
        f"  on/off CPU per answer: {on / off:.3f} ({verdict} the 10 % goal); "
        f"warm run p50 on/off: {w_on / w_off:.3f}; 10 % sampled/off: {sampled / off:.3f}"
    )
