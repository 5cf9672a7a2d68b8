"""Jobs that run once per fleet (the retention purge): whichever instance gets there first runs
the job, every other instance skips it until its period is over.

Two kinds of guard (`once_guard` picks one):

- `RedisOnce` (when FRAGMENTS_REDIS_URL is set): a lease in Redis, redis-py's `Lock` (`SET key
  token NX PX`, token-checked extend and release). The lease is short while the job runs and is
  renewed every third of it, so a holder that crashed (kill -9, a lost machine) stops blocking
  the others within `lock_seconds`. Once the job succeeds the same key is kept for the rest of
  the period: it is the "done" mark that makes the next instance skip (a failed job releases it,
  so another instance may try). Redis, not a PostgreSQL advisory lock, because: the fleet
  needs Redis anyway (the job queue, the E2B owner locks use the same primitive); it works the
  same on SQLite and PostgreSQL; a session-level advisory lock pins a pooled connection for the
  whole job and does not survive a transaction-pooling PgBouncer; and a lease can outlive the
  job as the period's mark, which an advisory lock cannot.
- `FileOnce` (no Redis: one machine): `flock` on a file in the data folder, which the kernel
  releases when its holder dies, holding the time of the last successful run. It keeps the
  workers of `fragments serve --workers N` on one machine to one purge a period.

While Redis is unreachable the Redis guard skips the round ("unavailable"): a purge may wait for
the next round, it must never run twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Literal, Protocol

import structlog
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from fragments.redis_client import SharedRedis

log = structlog.get_logger(__name__)

Outcome = Literal["ran", "skipped", "unavailable"]
Job = Callable[[], Awaitable[object]]

KEY_PREFIX = "fragments:once:"
LOCK_SECONDS = 60.0


class OnceGuard(Protocol):
    """Runs a named job unless another instance ran it less than `period` seconds ago or is
    running it now. A job's exception is raised after the guard is released."""

    async def run(self, name: str, period: float, job: Job) -> Outcome: ...


@contextlib.asynccontextmanager
async def renewed(lock: Lock, every: float) -> AsyncIterator[None]:
    """Keep `lock`'s lease alive (reset to its full timeout every `every` seconds) while the
    body runs; a lease lost meanwhile (Redis flushed, a long pause) is logged, not raised."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await lock.reacquire()
            except LockError:
                log.warning("lease_lost", key=str(lock.name))
                return
            except Exception as exc:  # Redis away for a moment: try again next time
                log.warning("lease_renew_failed", key=str(lock.name), error=repr(exc))

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RedisOnce:
    """The guard on Redis (see the module docstring)."""

    def __init__(
        self,
        redis: SharedRedis,
        *,
        prefix: str = KEY_PREFIX,
        lock_seconds: float = LOCK_SECONDS,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lock_seconds = lock_seconds

    async def run(self, name: str, period: float, job: Job) -> Outcome:
        client = self._redis.available()
        if client is None:
            return "unavailable"
        key = self._prefix + name
        lock = Lock(client, key, timeout=self._lock_seconds, blocking=False, thread_local=False)
        try:
            if not await lock.acquire():
                return "skipped"
        except Exception as exc:
            self._redis.outage.failed("once_redis_down", exc)
            return "unavailable"
        try:
            async with renewed(lock, self._lock_seconds / 3):
                await job()
        except BaseException:
            with contextlib.suppress(Exception):
                await lock.release()  # another instance may try again at once
            raise
        # Done: the lease stays as the period's mark (longer than the running lease only).
        with contextlib.suppress(Exception):
            if period > self._lock_seconds:
                await lock.extend(period, replace_ttl=True)
        return "ran"


class FileOnce:
    """The guard on one machine: `flock` on `<folder>/<name>.lock` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def run(self, name: str, period: float, job: Job) -> Outcome:
        self._folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "skipped"
            last = _read_float(fd)
            if last is not None and 0 <= time.time() - last < period:
                return "skipped"
            await job()
            os.ftruncate(fd, 0)
            os.pwrite(fd, repr(time.time()).encode(), 0)
            return "ran"
        finally:
            os.close(fd)  # closing drops the flock


def _read_float(fd: int) -> float | None:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    try:
        return float(text) if text else None
    except ValueError:
        return None


def once_guard(redis: SharedRedis | None, data_dir: Path) -> OnceGuard:
    """Redis when the app has it (a fleet), else a file lock in the data folder."""
    if redis is not None:
        return RedisOnce(redis)
    return FileOnce(data_dir / "locks")
