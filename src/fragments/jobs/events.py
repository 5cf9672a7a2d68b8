"""Per-job event streams: a job's phases, then its result or its error, replayable from any
event id. This is what a caller waiting for a job reads (the API process that submitted it
today; a WebSocket or an SSE client re-attaching after a reload tomorrow: `follow` from the last
id it saw).

In Redis each job has a stream `<prefix>job:<job_id>:events` that expires
`FRAGMENTS_JOB_EVENTS_TTL_SECONDS` after its last event; `MemoryJobEvents` is the same contract in
one process, for the embedded default. Event ids are stream ids (`<ms>-<n>`), ordered; "0-0"
reads from the start."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from redis.asyncio import Redis

from fragments.jobs.keys import FleetKeys
from fragments.jobs.replies import entries, streams

EventType = Literal["phase", "result", "error"]
TERMINAL: frozenset[str] = frozenset({"result", "error"})
START = "0-0"
_TYPES = frozenset(get_args(EventType))
# Events kept per job: phases are few; the cap only guards against a runaway producer.
_MAX_EVENTS = 1000


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: str
    type: EventType
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """The last event of a job: its result or its error."""
        return self.type in TERMINAL


class JobEvents(Protocol):
    async def publish(self, job_id: str, type: EventType, data: dict[str, Any]) -> str:
        """Append an event to the job's stream; its id."""
        ...

    async def read(self, job_id: str, after: str = START, wait: float = 0.0) -> list[JobEvent]:
        """The job's events after `after`, waiting up to `wait` seconds for one if none yet."""
        ...

    async def finished(self, job_id: str) -> bool:
        """Whether the job has its terminal event (so running it again would run it twice)."""
        ...


async def follow(
    events: JobEvents, job_id: str, *, after: str = START, within: float
) -> AsyncIterator[JobEvent]:
    """The job's events from `after` until its terminal one; TimeoutError when it has not
    come within `within` seconds in all."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"job {job_id} did not finish in {within:.0f} s")
        for event in await events.read(job_id, after, wait=min(left, 5.0)):
            after = event.id
            yield event
            if event.terminal:
                return


def _decode(entry_id: str, fields: dict[str, str]) -> JobEvent | None:
    kind = fields.get("type", "")
    if kind not in _TYPES:
        return None
    data = json.loads(fields.get("data") or "{}")
    return JobEvent(entry_id, kind, data if isinstance(data, dict) else {})  # type: ignore[arg-type]


class RedisJobEvents:
    """Job events in Redis streams (the client must allow blocking reads: see `jobs.redis`)."""

    def __init__(self, redis: Redis, keys: FleetKeys, ttl_seconds: float) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = max(1, int(ttl_seconds))

    async def publish(self, job_id: str, type: EventType, data: dict[str, Any]) -> str:
        key = self.keys.job_events(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"type": type, "data": json.dumps(data)}, maxlen=_MAX_EVENTS)
            pipe.expire(key, self.ttl)
            entry_id, _ = await pipe.execute()
        return str(entry_id)

    async def read(self, job_id: str, after: str = START, wait: float = 0.0) -> list[JobEvent]:
        key = self.keys.job_events(job_id)
        block = int(wait * 1000) if wait > 0 else None
        reply = await self.redis.xread({key: after}, block=block)
        events: list[JobEvent] = []
        for _stream, found in streams(reply):
            for entry_id, fields in found:
                event = _decode(entry_id, fields)
                if event is not None:
                    events.append(event)
        return events

    async def finished(self, job_id: str) -> bool:
        last = entries(await self.redis.xrevrange(self.keys.job_events(job_id), count=1))
        return bool(last) and last[0][1].get("type") in TERMINAL


class MemoryJobEvents:
    """The same contract in one process: the last `max_jobs` jobs' events, in memory."""

    def __init__(self, max_jobs: int = 10_000) -> None:
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, list[JobEvent]] = OrderedDict()
        self._changed = asyncio.Condition()
        self._last = (0, 0)

    def _next_id(self) -> str:
        ms, n = int(time.time() * 1000), 0
        if ms <= self._last[0]:
            ms, n = self._last[0], self._last[1] + 1
        self._last = (ms, n)
        return f"{ms}-{n}"

    async def publish(self, job_id: str, type: EventType, data: dict[str, Any]) -> str:
        event = JobEvent(self._next_id(), type, dict(data))
        events = self._jobs.setdefault(job_id, [])
        self._jobs.move_to_end(job_id)
        events.append(event)
        del events[:-_MAX_EVENTS]
        while len(self._jobs) > self.max_jobs:
            self._jobs.popitem(last=False)
        async with self._changed:
            self._changed.notify_all()
        return event.id

    def _after(self, job_id: str, after: str) -> list[JobEvent]:
        mark = _order(after)
        return [e for e in self._jobs.get(job_id, []) if _order(e.id) > mark]

    async def read(self, job_id: str, after: str = START, wait: float = 0.0) -> list[JobEvent]:
        found = self._after(job_id, after)
        if found or wait <= 0:
            return found
        try:
            async with asyncio.timeout(wait), self._changed:
                await self._changed.wait_for(lambda: bool(self._after(job_id, after)))
        except TimeoutError:
            return []
        return self._after(job_id, after)

    async def finished(self, job_id: str) -> bool:
        events = self._jobs.get(job_id) or []
        return bool(events) and events[-1].terminal


def _order(event_id: str) -> tuple[int, int]:
    ms, _, n = event_id.partition("-")
    return int(ms or 0), int(n or 0)
