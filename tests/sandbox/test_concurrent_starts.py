"""A burst of new sandboxes starts at most FRAGMENTS_SANDBOX_CONCURRENT_STARTS at a time (starts
are CPU-bound: started all at once they only slow each other past their timeout); the others
wait their turn and every run still gets its answer. Real kernels in the real confinement."""

from __future__ import annotations

import asyncio

import pytest

from fragments.config import Settings
from fragments.sandbox.local.service import LocalSandboxService
from fragments.schemas import InterpreterResult
from tests.sandbox.conftest import fragment

pytestmark = pytest.mark.anyio


async def test_a_burst_of_new_sandboxes_starts_one_at_a_time(sandbox_settings: Settings) -> None:
    settings = sandbox_settings.model_copy(
        update={"sandbox_concurrent_starts": 1, "sandbox_run_timeout_seconds": 30.0}
    )
    service = LocalSandboxService(settings)
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append((service.starting, service.waiting_to_start))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(
            *(service.execute(fragment(f"print({n} * 7)"), owner=f"burst-{n}") for n in range(3))
        )
    finally:
        done.set()
        await watcher
        await service.aclose()
    assert [r.stdout for r in results if isinstance(r, InterpreterResult)] == [
        ["0\n"],
        ["7\n"],
        ["14\n"],
    ]
    assert len({r.sandbox_id for r in results}) == 3
    assert max(starting for starting, _ in seen) == 1
    # The others waited their turn (not refused, not started alongside).
    assert max(waiting for _, waiting in seen) >= 1
    assert (service.starting, service.waiting_to_start) == (0, 0)
