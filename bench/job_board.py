"""What a sandbox run pays for being a job (`/api/ws`, re-attach after a reload): the job
board's work per run — open (owner, `queued`), four phases, the result — and a follower reading
them all, in memory (one process) and on Redis (a fleet, or one process with Redis). Median and
p95 over 200 jobs, measured in one run:

    .venv/bin/python -m bench.job_board

(Also `python -m bench job_board`, one of `make bench`'s parts.)"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time

os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

from fragments.config import Settings
from fragments.jobs.board import job_board
from fragments.ports import JobOwner
from fragments.sandbox.live import follow_job

JOBS = 200
PHASES = ("acquiring", "installing", "starting", "running")


async def _per_job_ms(settings: Settings) -> list[float]:
    # The board only asks whether the service is the fleet's; no sandbox runs here.
    board = job_board(settings, object())  # type: ignore[arg-type]
    times: list[float] = []
    try:
        for _ in range(JOBS):
            job = secrets.token_hex(12)
            began = time.perf_counter()
            await board.open(job, JobOwner("user", "team"))
            for phase in PHASES:
                await board.publish(job, "phase", {"phase": phase})
            await board.publish(job, "result", {"stdout": ["ok\n"]})
            seen = [event async for event in follow_job(board, job, within=10)]
            times.append((time.perf_counter() - began) * 1000)
            assert len(seen) == len(PHASES) + 2
    finally:
        await board.aclose()
    return times


def _line(name: str, times: list[float]) -> str:
    p95 = sorted(times)[int(len(times) * 0.95)]
    return f"job board, {name:6}: p50 {statistics.median(times):.3f} ms, p95 {p95:.3f} ms a run"


async def main() -> None:
    base = Settings(_env_file=None)
    print(_line("memory", await _per_job_ms(base)))
    prefix = f"bench-board-{secrets.token_hex(3)}:"
    on_redis = base.model_copy(
        update={"redis_url": "redis://127.0.0.1:6379/0", "fleet_prefix": prefix}
    )
    print(_line("redis", await _per_job_ms(on_redis)))
    from redis.asyncio import Redis

    redis = Redis(decode_responses=True)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
