"""The job queue on Redis Streams, with redis-py's stream commands (why not a library: README,
"Running a fleet").

- Streams: each node has its own (`<prefix>node:<id>:jobs`, jobs for the sandboxes it holds and
  new sandboxes routed to it); `<prefix>jobs:new` is shared (a new sandbox when no node has a
  warm one: whichever node reads first takes it). Every stream is read in one consumer group.
- At-least-once: an entry stays pending until the node that ran it acknowledges it (XACK, then
  XDEL, so a stream's length is its jobs waiting or running). A node heart-beats the entries it
  is running (`XCLAIM ... JUSTID`, which resets their idle time without counting a delivery), so
  an entry idle for `FRAGMENTS_JOB_RECLAIM_IDLE_SECONDS` belongs to a node that died: another
  node takes it over with XAUTOCLAIM, or reads a dead node's stream as its own.
- Idempotent job ids: the submitter names the job; a node runs a delivery only while the job
  has no terminal event (`events.finished`), so a job whose result is out is never run again,
  however often it is delivered.
- Dead letters: each start of a job counts an attempt; past `FRAGMENTS_JOB_MAX_ATTEMPTS` it is
  moved to `<prefix>jobs:dead` and its caller gets an error instead of a result.
- Backpressure: a submit is refused (`QueueFull`, 503 with Retry-After) when the stream already
  holds `FRAGMENTS_JOB_QUEUE_MAX` jobs: a bounded queue, never an unbounded wait. The check and
  the add are one Lua script, so concurrent submitters cannot overshoot it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from fragments.errors import FragmentsError
from fragments.jobs.keys import GROUP, FleetKeys
from fragments.jobs.replies import entries
from fragments.jobs.replies import streams as reply_streams

log = structlog.get_logger(__name__)

JobKind = Literal["run", "prepare", "kill", "extend", "build"]
_KINDS = frozenset(get_args(JobKind))

# KEYS[1] stream; ARGV: max length, job JSON, group. The group is made at the start of the
# stream (id 0) when missing, so no job added before a node first reads is skipped.
_SUBMIT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[3], '0', 'MKSTREAM')
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
"""


class QueueFull(FragmentsError):
    """The job stream holds as many jobs as it may: try again shortly."""

    status_code = 503
    code = "queue_full"


def new_job_id() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of sandbox work. `owner` is the conversation (its sandbox); `fragment` the
    fragment to run (`run`, whose dependency installs are part of it); `template` what to
    prepare (`prepare`) or build on the node (`build`, rebuilt when `force`); `sandbox_id` and
    `seconds` for `kill` and `extend`."""

    kind: JobKind
    id: str = field(default_factory=new_job_id)
    owner: str | None = None
    fragment: dict[str, Any] | None = None
    restart: bool = False
    template: str = ""
    sandbox_id: str = ""
    seconds: float = 0.0
    # The conversation's data files for a run: [name, base64 of the bytes] pairs.
    data_files: list[list[str]] = field(default_factory=list)
    force: bool = False

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, text: str) -> Job:
        """Parse a stream entry's job; ValueError when it is not one."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("kind") not in _KINDS or not raw.get("id"):
            raise ValueError("not a job")
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A stream entry handed to this consumer: the job, or None when the entry is unreadable."""

    stream: str
    entry_id: str
    job: Job | None
    raw: str


def _delivery(stream: str, entry_id: str, fields: dict[str, str]) -> Delivery:
    raw = fields.get("job", "")
    try:
        job: Job | None = Job.load(raw)
    except (ValueError, TypeError):
        job = None
    return Delivery(stream, entry_id, job, raw)


class JobQueue:
    """Submitting, reading, acknowledging, heart-beating and reclaiming jobs (module docstring)."""

    def __init__(self, redis: Redis, keys: FleetKeys, *, max_jobs: int, max_attempts: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_jobs = max_jobs
        self.max_attempts = max_attempts
        self._submit = redis.register_script(_SUBMIT)

    async def submit(self, stream: str, job: Job, *, retry_after: int = 5) -> str:
        """Add a job to a stream; its entry id. QueueFull when the stream is full."""
        entry = await self._submit(keys=[stream], args=[self.max_jobs, job.dump(), GROUP])
        if not entry:
            raise QueueFull(
                "The sandbox queue is full right now; please try again in a few seconds.",
                headers={"Retry-After": str(retry_after)},
            )
        return str(entry)

    async def ensure_group(self, stream: str) -> None:
        """Create the stream's consumer group (and the stream) unless they exist."""
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(
        self, consumer: str, streams: Sequence[str], *, count: int, block: float | None
    ) -> list[Delivery]:
        """New entries for `consumer` from `streams`, waiting up to `block` seconds."""
        wanted: dict[Any, Any] = {s: ">" for s in streams}
        block_ms = int(block * 1000) if block else None
        try:
            reply = await self.redis.xreadgroup(
                GROUP, consumer, wanted, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for stream in streams:
                await self.ensure_group(stream)
            return []
        return [
            _delivery(stream, entry_id, fields)
            for stream, found in reply_streams(reply)
            for entry_id, fields in found
        ]

    async def ack(self, delivery: Delivery) -> None:
        """Done with an entry: acknowledged and removed (the stream's length is its backlog)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(delivery.stream, GROUP, delivery.entry_id)
            pipe.xdel(delivery.stream, delivery.entry_id)
            await pipe.execute()

    async def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """Heart-beat entries being run: their idle time starts again, no delivery is counted."""
        by_stream: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_stream.setdefault(delivery.stream, []).append(delivery.entry_id)
        for stream, ids in by_stream.items():
            await self.redis.xclaim(stream, GROUP, consumer, 0, list[Any](ids), justid=True)

    async def reclaim(self, stream: str, consumer: str, min_idle: float) -> list[Delivery]:
        """Take over entries of `stream` idle for `min_idle` seconds (their consumer stopped
        heart-beating them: it died)."""
        claimed: list[Delivery] = []
        cursor = "0-0"
        while True:
            try:
                reply = await self.redis.xautoclaim(
                    stream, GROUP, consumer, int(min_idle * 1000), cursor, count=50
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    return claimed
                raise
            cursor = str(reply[0])
            claimed.extend(
                _delivery(stream, entry_id, fields) for entry_id, fields in entries(reply[1])
            )
            if cursor == "0-0":
                return claimed

    async def begin_attempt(self, job_id: str, ttl_seconds: float) -> int:
        """Count a start of the job; its number (1 for the first)."""
        key = self.keys.job_attempts(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, max(1, int(ttl_seconds)))
            attempts, _ = await pipe.execute()
        return int(attempts)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move an entry to the dead-letter stream, with why, and acknowledge it."""
        await self.redis.xadd(
            self.keys.dead_letters,
            {"job": delivery.raw, "stream": delivery.stream, "reason": reason},
            maxlen=10_000,
        )
        await self.ack(delivery)
        log.warning("job_dead_lettered", stream=delivery.stream, reason=reason)

    async def depth(self, stream: str) -> int:
        """Jobs waiting or running in a stream."""
        return int(await self.redis.xlen(stream))
