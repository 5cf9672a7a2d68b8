"""What the fleet's queue holds, for the metrics: jobs per stream (waiting or running: a node
removes an entry when it acknowledges it), the age of each stream's oldest entry, and the
dead-letter stream's length.

Streams are named without the fleet prefix (`jobs:new`, `node:<id>:jobs`), so dashboards do not
change with `FRAGMENTS_FLEET_PREFIX`. Read at scrape time from Redis: a few commands per
known node, one round trip in all (a pipeline)."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

from fragments.jobs.keys import FleetKeys
from fragments.jobs.replies import entries
from fragments.observability import metrics


@dataclass(frozen=True, slots=True)
class StreamStats:
    depth: int
    oldest_seconds: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    streams: dict[str, StreamStats] = field(default_factory=dict)
    dead_letters: int = 0


def _entry_age(entry_id: str, now_ms: int) -> float:
    """Seconds since an entry was added (its id starts with the server's milliseconds)."""
    millis = int(entry_id.split("-", 1)[0])
    return max(0.0, (now_ms - millis) / 1000)


async def queue_stats(redis: Redis, keys: FleetKeys) -> QueueStats:
    """Every job stream of the fleet (the shared one, and each known node's) and the dead
    letters; a stream that does not exist yet counts as empty."""
    node_ids = sorted(str(m) for m in await redis.smembers(keys.nodes))
    streams = [keys.new_sandboxes, *(keys.node_jobs(n) for n in node_ids)]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.xlen(keys.dead_letters)
        for stream in streams:
            pipe.xlen(stream)
            pipe.xrange(stream, "-", "+", count=1)
        replies = await pipe.execute()
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    found: dict[str, StreamStats] = {}
    for i, stream in enumerate(streams):
        depth, first = replies[2 + 2 * i], entries(replies[3 + 2 * i])
        oldest = _entry_age(first[0][0], now_ms) if first else 0.0
        found[stream.removeprefix(keys.prefix)] = StreamStats(int(depth), oldest)
    return QueueStats(found, int(replies[1]))


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """Counts only, for `GET /api/status`: live nodes and the jobs waiting or running."""

    nodes: int
    queued_jobs: int
    oldest_job_seconds: float


def summarize(live_nodes: int, stats: QueueStats) -> FleetSummary:
    return FleetSummary(
        nodes=live_nodes,
        queued_jobs=sum(s.depth for s in stats.streams.values()),
        oldest_job_seconds=round(
            max((s.oldest_seconds for s in stats.streams.values()), default=0.0), 1
        ),
    )


async def export_queue_metrics(redis: Redis, keys: FleetKeys) -> None:
    """Record the queue's gauges (streams' depths and oldest ages, dead letters)."""
    stats = await queue_stats(redis, keys)
    metrics.queue_streams(
        {name: (s.depth, s.oldest_seconds) for name, s in stats.streams.items()},
        stats.dead_letters,
    )
