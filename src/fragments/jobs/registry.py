"""The fleet's registry in Redis: live nodes (a heartbeat with a time to live, its URL and its
free warm slots per template), which node holds a sandbox, and which sandbox is a
conversation's (owner's).

A node is alive while its heartbeat key exists; it is gone three beats after its last one. Its
sandboxes are then lost: a placement naming a node that is gone is treated as no sandbox (the
next run starts one elsewhere and says the sandbox restarted; a preview answers "expired")."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from redis.asyncio import Redis

from fragments.jobs.keys import FleetKeys
from fragments.jobs.replies import text


@dataclass(frozen=True, slots=True)
class NodeInfo:
    id: str
    url: str
    # Warm (pooled, unowned) sandboxes ready now, per template id.
    free: dict[str, int] = field(default_factory=dict)
    sandboxes: int = 0
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Placement:
    """An owner's sandbox: where it lives and what it runs."""

    sandbox_id: str
    node_id: str
    template: str


def _node(found: str | None) -> NodeInfo | None:
    if not found:
        return None
    raw = json.loads(found)
    return NodeInfo(
        id=str(raw["id"]),
        url=str(raw["url"]),
        free={str(k): int(v) for k, v in dict(raw.get("free") or {}).items()},
        sandboxes=int(raw.get("sandboxes", 0)),
        at=float(raw.get("at", 0.0)),
    )


class FleetRegistry:
    def __init__(self, redis: Redis, keys: FleetKeys, *, heartbeat_seconds: float) -> None:
        self.redis = redis
        self.keys = keys
        # Three missed beats and a node is gone.
        self.node_ttl_ms = max(1000, int(heartbeat_seconds * 3 * 1000))

    # ---- nodes -------------------------------------------------------------------------------

    async def heartbeat(self, info: NodeInfo) -> None:
        stamped = NodeInfo(info.id, info.url, info.free, info.sandboxes, time.time())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.node(info.id), json.dumps(asdict(stamped)), px=self.node_ttl_ms)
            pipe.sadd(self.keys.nodes, info.id)
            await pipe.execute()

    async def leave(self, node_id: str) -> None:
        """A node stopping cleanly: gone at once (its stream is taken over by the others)."""
        await self.redis.delete(self.keys.node(node_id))

    async def node(self, node_id: str) -> NodeInfo | None:
        """The node if it is alive."""
        return _node(text(await self.redis.get(self.keys.node(node_id))))

    async def known(self) -> list[str]:
        return sorted(str(m) for m in await self.redis.smembers(self.keys.nodes))

    async def nodes(self) -> tuple[list[NodeInfo], list[str]]:
        """(live nodes, ids of known nodes that are gone)."""
        ids = await self.known()
        if not ids:
            return [], []
        texts = await self.redis.mget([self.keys.node(i) for i in ids])
        live: list[NodeInfo] = []
        gone: list[str] = []
        for node_id, raw in zip(ids, texts, strict=True):
            info = _node(text(raw))
            if info is None:
                gone.append(node_id)
            else:
                live.append(info)
        return live, gone

    async def retire(self, node_id: str) -> None:
        """Forget a gone node whose stream is empty."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.nodes, node_id)
            pipe.delete(self.keys.node_jobs(node_id))
            await pipe.execute()

    # ---- sandboxes and owners ----------------------------------------------------------------

    async def place(
        self,
        sandbox_id: str,
        node_id: str,
        template: str,
        owner: str | None,
        ttl_seconds: float,
    ) -> None:
        ttl = max(1, int(ttl_seconds))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.sandbox(sandbox_id), node_id, ex=ttl)
            if owner is not None:
                record = Placement(sandbox_id, node_id, template)
                pipe.set(self.keys.owner(owner), json.dumps(asdict(record)), ex=ttl)
            await pipe.execute()

    async def keep(self, sandbox_id: str, ttl_seconds: float) -> None:
        """Keep a placement at least `ttl_seconds` (a sandbox extended for publishing)."""
        key = self.keys.sandbox(sandbox_id)
        left = await self.redis.ttl(key)
        if left is not None and 0 <= left < ttl_seconds:
            await self.redis.expire(key, max(1, int(ttl_seconds)))

    async def node_of(self, sandbox_id: str) -> str | None:
        value = await self.redis.get(self.keys.sandbox(sandbox_id))
        return str(value) if value else None

    async def owned(self, owner: str) -> Placement | None:
        found = text(await self.redis.get(self.keys.owner(owner)))
        if not found:
            return None
        raw = json.loads(found)
        return Placement(str(raw["sandbox_id"]), str(raw["node_id"]), str(raw["template"]))

    async def drop(self, sandbox_id: str) -> None:
        await self.redis.delete(self.keys.sandbox(sandbox_id))
