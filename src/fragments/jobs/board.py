"""The API tier's job board (`fragments.ports.JobBoard`): who owns each sandbox job, its event
stream, and the runs and prepares that outlive the HTTP request that started them.

Three set-ups, chosen by `job_board`:
- fleet (FRAGMENTS_EMBEDDED_NODE=false, and the workers of `serve --workers N`): owners and
  events in Redis, on the fleet's client; the nodes publish a job's phases and result there
  themselves, so any API process can follow a job another one submitted, even once that one is
  gone;
- embedded with Redis: Redis too, so a WebSocket served by another process finds the job; a
  job whose Redis writes fail carries on in memory, so a Redis outage never fails an embedded
  run;
- embedded without Redis (the one-process default): memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from fragments.config import Settings
from fragments.jobs.connection import fleet_keys, fleet_redis
from fragments.jobs.events import START, JobEvent, JobEvents, MemoryJobEvents, RedisJobEvents
from fragments.jobs.fleet import FleetSandboxService, FleetUnavailable
from fragments.jobs.keys import FleetKeys
from fragments.ports import JobBoard, JobEventType, JobOwner, SandboxService

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_REDIS_DOWN = (RedisError, OSError)
# How long detached work may go on once the app is stopping (then it is cancelled).
_SHUTDOWN_GRACE_SECONDS = 5.0
# Jobs kept in one process's memory. A result can weigh a few hundred KB (charts), so the cap is
# what bounds the memory: enough to re-attach after a reload, not an archive (results are
# stored with their fragments).
MEMORY_JOBS = 500


class JobOwners(Protocol):
    async def put(self, job_id: str, owner: JobOwner | None) -> None: ...

    async def get(self, job_id: str) -> JobOwner | bool | None:
        """The owner; False when the job is unknown (None: anonymous)."""
        ...


class MemoryJobOwners:
    """The last `max_jobs` jobs' owners in this process."""

    def __init__(self, max_jobs: int = 10_000) -> None:
        self.max_jobs = max_jobs
        self._owners: OrderedDict[str, JobOwner | None] = OrderedDict()

    async def put(self, job_id: str, owner: JobOwner | None) -> None:
        self._owners[job_id] = owner
        while len(self._owners) > self.max_jobs:
            self._owners.popitem(last=False)

    async def get(self, job_id: str) -> JobOwner | bool | None:
        return self._owners.get(job_id, False)


class RedisJobOwners:
    """Owners as `<prefix>job:<id>:owner` (JSON), kept as long as the job's events."""

    def __init__(self, redis: Redis, keys: FleetKeys, ttl_seconds: float) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = max(1, int(ttl_seconds))

    def _key(self, job_id: str) -> str:
        return f"{self.keys.job_events(job_id)}:owner"

    async def put(self, job_id: str, owner: JobOwner | None) -> None:
        value = {"user_id": owner.user_id, "team_id": owner.team_id} if owner else {}
        await self.redis.set(self._key(job_id), json.dumps(value), ex=self.ttl)

    async def get(self, job_id: str) -> JobOwner | bool | None:
        raw = await self.redis.get(self._key(job_id))
        if raw is None:
            return False
        value = json.loads(raw)
        user_id = value.get("user_id") if isinstance(value, dict) else None
        if not isinstance(user_id, str):
            return None
        team_id = value.get("team_id")
        return JobOwner(user_id, team_id if isinstance(team_id, str) else None)


class Board:
    """A JobBoard over an event store and an owner store. With a `fallback` (memory, under
    Redis in embedded mode), a job whose Redis writes fail carries on in memory: an outage
    never fails an embedded run, only its being followed from another process."""

    def __init__(
        self,
        events: JobEvents,
        owners: JobOwners,
        *,
        fallback: tuple[MemoryJobEvents, MemoryJobOwners] | None = None,
        redis: Redis | None = None,
    ) -> None:
        self.events = events
        self.owners = owners
        self.fallback = fallback
        self._redis = redis  # closed with the board (None: the sandbox service's client)
        # Jobs living in the fallback since a Redis write failed (the newest few thousand).
        self._local: OrderedDict[str, None] = OrderedDict()
        self._work: set[asyncio.Task[Any]] = set()

    def _fall_back(
        self, job_id: str, exc: BaseException
    ) -> tuple[MemoryJobEvents, MemoryJobOwners]:
        assert self.fallback is not None
        if job_id not in self._local:
            log.warning("job_board_redis_failed", job_id=job_id, error=repr(exc))
        self._local[job_id] = None
        while len(self._local) > 10_000:
            self._local.popitem(last=False)
        return self.fallback

    def _is_local(self, job_id: str) -> bool:
        return self.fallback is not None and job_id in self._local

    async def open(self, job_id: str, owner: JobOwner | None) -> None:
        if self.fallback is not None:
            await self.fallback[1].put(job_id, owner)  # cheap, and read first by `owner`
        try:
            await self.owners.put(job_id, owner)
        except _REDIS_DOWN as exc:
            if self.fallback is None:
                raise
            self._fall_back(job_id, exc)
        await self.publish(job_id, "phase", {"phase": "queued"})

    async def owner(self, job_id: str) -> JobOwner | None:
        found: JobOwner | bool | None = False
        if self.fallback is not None:
            found = await self.fallback[1].get(job_id)
        if found is False:
            try:
                found = await self.owners.get(job_id)
            except _REDIS_DOWN:
                if self.fallback is None:
                    raise
        return found if isinstance(found, JobOwner) else None

    async def publish(self, job_id: str, type: JobEventType, data: dict[str, Any]) -> str:
        if self._is_local(job_id):
            assert self.fallback is not None
            return await self.fallback[0].publish(job_id, type, data)
        try:
            return await self.events.publish(job_id, type, data)
        except _REDIS_DOWN as exc:
            if self.fallback is None:
                raise
            return await self._fall_back(job_id, exc)[0].publish(job_id, type, data)

    async def read(self, job_id: str, after: str = START, wait: float = 0.0) -> Sequence[JobEvent]:
        if self._is_local(job_id):
            assert self.fallback is not None
            return await self.fallback[0].read(job_id, after, wait)
        try:
            return await self.events.read(job_id, after, wait)
        except _REDIS_DOWN:
            if self.fallback is None:
                raise
            return await self.fallback[0].read(job_id, after, wait)

    async def finished(self, job_id: str) -> bool:
        if self._is_local(job_id):
            assert self.fallback is not None
            return await self.fallback[0].finished(job_id)
        try:
            return await self.events.finished(job_id)
        except _REDIS_DOWN:
            if self.fallback is None:
                raise
            return await self.fallback[0].finished(job_id)

    def detach(self, work: Coroutine[Any, Any, _T]) -> Awaitable[_T]:
        task = asyncio.create_task(work)
        self._work.add(task)
        task.add_done_callback(self._done)
        # The task itself: a shield made here but never awaited (a 202, an SSE answer) would
        # hold the work's exception unretrieved. Waiters shield it themselves.
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._work.discard(task)
        # Read here so an exception nobody awaited (the request went away) is not reported
        # as never retrieved; the work published it as the job's error event already.
        if not task.cancelled():
            task.exception()

    async def aclose(self) -> None:
        if self._work:
            await asyncio.wait(list(self._work), timeout=_SHUTDOWN_GRACE_SECONDS)
        for task in list(self._work):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._redis is not None:
            await self._redis.aclose()


class FleetBoard(Board):
    """The fleet's board: Redis only, so an outage is the fleet's clear 503."""

    async def open(self, job_id: str, owner: JobOwner | None) -> None:
        try:
            await super().open(job_id, owner)
        except _REDIS_DOWN as exc:
            log.warning("job_board_redis_failed", error=repr(exc))
            raise FleetUnavailable(
                "The sandbox fleet cannot be reached right now (its queue is down); "
                "please try again shortly.",
                headers={"Retry-After": "5"},
            ) from exc


def job_board(settings: Settings, sandboxes: SandboxService) -> JobBoard:
    """The board for this process's set-up (module docstring)."""
    ttl = settings.job_events_ttl_seconds
    if isinstance(sandboxes, FleetSandboxService):
        return FleetBoard(sandboxes.events, RedisJobOwners(sandboxes.redis, sandboxes.keys, ttl))
    if not settings.redis_url:
        return Board(MemoryJobEvents(MEMORY_JOBS), MemoryJobOwners(MEMORY_JOBS))
    redis, keys = fleet_redis(settings), fleet_keys(settings)
    return Board(
        RedisJobEvents(redis, keys, ttl),
        RedisJobOwners(redis, keys, ttl),
        fallback=(MemoryJobEvents(MEMORY_JOBS), MemoryJobOwners(MEMORY_JOBS)),
        redis=redis,
    )
