"""(fleet) The queue hop and new sandboxes across nodes, on real Redis (a key prefix per run).

1. Warm-run overhead: the same warm kernel run in-process (`LocalSandboxService.execute`) and
   through the fleet (FleetSandboxService -> the node's Redis stream -> a NodeWorker on that same
   local service -> the job's event stream back), alternating, in one process; p50 of each and
   the difference (the hop: the bounded XADD, the blocking XREADGROUP, phase and result events,
   the XREAD wake-up, XACK/XDEL).
2. New sandboxes across two node processes (`fragments node`): N conversations' first runs at
   once through the fleet; p50/p95 from submit to result, how they spread over the nodes, and
   the nodes' memory with all N sandboxes alive at the end.

The nodes get a slot range of their own below the default one (`FRAGMENTS_SANDBOX_UID_BASE`
lowered, `FRAGMENTS_SANDBOX_MAX_COUNT` raised by the same amount): N sandboxes alive at once need
N uids, and the uids derived from the range's end (the installer's, the Node templates' group)
stay the default ones, so processes of other apps on this machine are not disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
from redis.asyncio import Redis

from bench.harness import free_port
from bench.sse_client import percentile
from fragments.config import Settings
from fragments.jobs.fleet import FleetSandboxService
from fragments.jobs.worker import NodeWorker
from fragments.sandbox.local.service import LocalSandboxService
from fragments.schemas import Fragment, InterpreterResult

CELL = Fragment(template="code-interpreter-v1", code="print(sum(range(1000)))")


def _ok(result: object) -> None:
    if not isinstance(result, InterpreterResult) or result.error is not None:
        raise RuntimeError(f"the bench cell failed: {result}")


async def _drop(prefix: str) -> None:
    redis = Redis(decode_responses=True)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)
    await redis.aclose()


async def _hop(runs: int) -> None:
    prefix = f"bench-fleet-{secrets.token_hex(4)}:"
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            sandbox_pool_sizes={},
            redis_url="redis://127.0.0.1:6379/0",
            fleet_prefix=prefix,
            embedded_node=False,
        )
        local = LocalSandboxService(settings)
        node_redis = Redis(decode_responses=True, socket_timeout=15)
        worker = NodeWorker(settings, node_redis, local, node_id="bench", url="http://127.0.0.1:1")
        fleet = FleetSandboxService.connect(settings)
        try:
            await local.check()
            await worker.start()
            _ok(await local.execute(CELL, owner="in-process"))
            _ok(await fleet.execute(CELL, owner="fleet"))  # both kernels warm
            direct: list[float] = []
            hopped: list[float] = []
            for _ in range(runs):
                start = time.perf_counter()
                _ok(await local.execute(CELL, owner="in-process"))
                direct.append(time.perf_counter() - start)
                start = time.perf_counter()
                _ok(await fleet.execute(CELL, owner="fleet"))
                hopped.append(time.perf_counter() - start)
        finally:
            await fleet.aclose()
            await worker.aclose()
            await local.aclose()
            await node_redis.aclose()
            await _drop(prefix)
    d50, h50 = percentile(direct, 50) * 1000, percentile(hopped, 50) * 1000
    d95, h95 = percentile(direct, 95) * 1000, percentile(hopped, 95) * 1000
    print(
        f"  warm run, in-process  p50 {d50:6.1f} ms p95 {d95:6.1f} ms (n={runs})\n"
        f"  warm run, queue hop   p50 {h50:6.1f} ms p95 {h95:6.1f} ms\n"
        f"  overhead of the hop   p50 {h50 - d50:+6.1f} ms (goal <= 5 ms), ratio {h50 / d50:4.2f}x"
    )


def _start_node(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "fragments.cli", "node", "--port", str(port)]
    return subprocess.Popen(
        # BENCH_NODE_LOGS=info (or warning) shows the nodes' logs.
        [*command, "--log-level", os.environ.get("BENCH_NODE_LOGS", "warning")],
        env=env,
        # The nodes' JSON logs go to stdout.
        stdout=None if os.environ.get("BENCH_NODE_LOGS") else subprocess.DEVNULL,
        stderr=None if os.environ.get("BENCH_NODE_LOGS") else subprocess.DEVNULL,
    )


def _tree_rss(proc: subprocess.Popen[bytes]) -> int:
    """Resident memory of a process and all its children (the node and its sandboxes)."""
    total = 0
    root = psutil.Process(proc.pid)
    for member in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


async def _spread(count: int) -> None:
    prefix = f"bench-fleet-{secrets.token_hex(4)}:"
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    extra = count + 8  # the bench's sandboxes, the warm slots, their refills
    env = {
        **os.environ,
        "FRAGMENTS_REDIS_URL": "redis://127.0.0.1:6379/0",
        "FRAGMENTS_FLEET_PREFIX": prefix,
        "FRAGMENTS_SANDBOX_POOL_SIZES": '{"code-interpreter-v1": 1}',
        "FRAGMENTS_PREVIEW_DOMAIN": "preview.bench",
        # See the module docstring: a range below the default one, the same end.
        "FRAGMENTS_SANDBOX_UID_BASE": str(defaults.sandbox_uid_base - extra),
        "FRAGMENTS_SANDBOX_MAX_COUNT": str(defaults.sandbox_max_count + extra),
    }
    nodes = [_start_node(env, free_port()) for _ in range(2)]
    settings = Settings(
        redis_url="redis://127.0.0.1:6379/0",
        fleet_prefix=prefix,
        embedded_node=False,
        job_queue_max=2 * count + 10,
    )
    live_rss = 0
    fleet = FleetSandboxService.connect(settings)
    try:
        # Both nodes beating, each with its warm slot filled.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            live, _ = await fleet.registry.nodes()
            if len(live) == 2 and all(n.free.get(CELL.template) for n in live):
                break
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError(
                f"the two bench nodes did not come up with warm slots: {live} "
                f"(exit codes {[node.poll() for node in nodes]}; BENCH_NODE_LOGS=info shows why)"
            )

        async def first_run(i: int) -> tuple[float, str]:
            start = time.perf_counter()
            result = await fleet.execute(CELL, owner=f"bench-new-{i}")
            _ok(result)
            assert isinstance(result, InterpreterResult)
            node = await fleet.registry.node_of(result.sandbox_id)
            return time.perf_counter() - start, node or "?"

        began = time.perf_counter()
        done = await asyncio.gather(*(first_run(i) for i in range(count)), return_exceptions=True)
        wall = time.perf_counter() - began
        live_rss = sum(_tree_rss(node) for node in nodes)
    finally:
        await fleet.aclose()
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(timeout=60)
        await _drop(prefix)
    ok = [d for d in done if isinstance(d, tuple)]
    failed = Counter(f"{type(d).__name__}: {d}" for d in done if not isinstance(d, tuple))
    times = [t for t, _ in ok]
    spread = Counter(node for _, node in ok)
    p95 = percentile(times, 95)
    verdict = "met" if not failed and p95 <= 10 else "NOT met"
    failures = f" {dict(failed)}" if failed else ""
    print(
        f"  {count} new sandboxes at once over 2 nodes (1 warm slot each): "
        f"p50 {percentile(times, 50):5.2f} s p95 {p95:5.2f} s max {max(times, default=0):5.2f} s "
        f"(goal p95 <= 10 s: {verdict}); all done in {wall:.1f} s; per node "
        f"{sorted(spread.values())}; {sum(failed.values())} failed{failures}\n"
        f"  {len(ok)} sandboxes alive at once at the end: nodes + sandboxes "
        f"{live_rss / 2**30:.1f} GiB resident ({live_rss / 2**20 / max(1, len(ok)):.0f} MiB each)"
    )


def run(runs: int = 30, new: int = 100) -> None:
    print(
        "\n(fleet) the queue hop on a warm kernel, and "
        f"{new} new sandboxes (code-interpreter-v1) across 2 nodes (real Redis; 2 vCPUs shared "
        "by everything: cold kernels are CPU work, so the CPUs, not the queue, set the pace)"
    )
    asyncio.run(_hop(runs))
    asyncio.run(_spread(new))
