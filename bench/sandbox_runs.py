"""(b) the Python sandbox: first run in a new sandbox (cold kernel) against later runs (warm)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.sse_client import percentile
from fragments.config import Settings
from fragments.sandbox.local.service import LocalSandboxService
from fragments.schemas import Fragment, InterpreterResult

CELLS = {
    "print": "print(sum(range(1000)))",
    "chart": (
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2, 4])\nplt.title('bench')\nplt.show()\n"
    ),
}


async def _timed(svc: LocalSandboxService, code: str, owner: str | None) -> float:
    fragment = Fragment(template="code-interpreter-v1", code=code, file_path="script.py")
    start = time.perf_counter()
    result = await svc.execute(fragment, owner=owner)
    elapsed = time.perf_counter() - start
    if not isinstance(result, InterpreterResult) or result.error is not None:
        raise RuntimeError(f"the bench cell failed: {result}")
    return elapsed


async def _measure(cold_runs: int, warm_runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # No warm pool: "cold" must mean a new kernel (bench/sandbox_templates.py has the pool).
        svc = LocalSandboxService(Settings(data_dir=Path(tmp), sandbox_pool_sizes={}))
        try:
            await svc.check()
            await _timed(svc, "1", None)  # builds the template if needed; not measured
            for name, code in CELLS.items():
                cold = [await _timed(svc, code, None) for _ in range(cold_runs)]
                owner = f"bench-{name}"
                await _timed(svc, code, owner)  # the owner's first (cold) run
                warm = [await _timed(svc, code, owner) for _ in range(warm_runs)]
                c50, c95 = percentile(cold, 50) * 1000, percentile(cold, 95) * 1000
                w50, w95 = percentile(warm, 50) * 1000, percentile(warm, 95) * 1000
                print(
                    f"  {name:>5} cell: cold p50 {c50:7.1f} ms p95 {c95:7.1f} ms | "
                    f"warm p50 {w50:6.1f} ms p95 {w95:6.1f} ms | "
                    f"cold/warm (p50) {statistics.median(cold) / statistics.median(warm):5.1f}x"
                )
        finally:
            await svc.aclose()


def cold_vs_warm(cold_runs: int = 10, warm_runs: int = 30) -> None:
    print(
        f"\n(b) Python sandbox: new sandbox per run (cold kernel, n={cold_runs}) vs the same "
        f"sandbox again (warm, n={warm_runs}); time from execute() to result"
    )
    asyncio.run(_measure(cold_runs, warm_runs))
