"""What the instances of a fleet share about E2B sandboxes, in Redis: one owner's sandbox at a
time, and who created and who uses each sandbox.

Several API processes (or machines) use one E2B account. Without this, two of them could
create two sandboxes for one conversation at once, and a graceful shutdown of any of them would
kill sandboxes the others are using. Keys (under `prefix`):

- `lock:<owner>`: redis-py's `Lock`, held while an instance finds or creates the owner's
  sandbox (a lease renewed while held, so a crashed holder frees it within `LOCK_SECONDS`);
- `owner:<owner>` -> the owner's current sandbox id (set when one is created or connected);
- `sandbox:<id>` -> a hash: `template`, `creator` (an instance id) and `user:<instance>` for
  every instance that has used it;
- `instance:<id>`: an instance's heartbeat (a key with a short TTL, refreshed while it lives),
  so the uses of an instance that died do not count for ever.

At shutdown an instance kills a sandbox only when it created it and no *live* other instance
has used it; the others are left to E2B's own timeout (`sandbox_lifetime_seconds` after their
last use). Without Redis, or while it is down, the service behaves as one process alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator

import structlog
from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from fragments.once import renewed
from fragments.redis_client import SharedRedis

log = structlog.get_logger(__name__)

KEY_PREFIX = "fragments:e2b:"
LOCK_SECONDS = 30.0
HEARTBEAT_SECONDS = 10.0
# Records outlive the longest a sandbox can live (E2B's 24 h), then go by themselves.
RECORD_SECONDS = 25 * 3600

# Delete KEYS[1] only while it still names ARGV[1] (another instance may have replaced it).
_DELETE_IF = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class FleetRecords:
    """The shared records of one instance (see the module docstring)."""

    def __init__(
        self,
        redis: SharedRedis,
        *,
        prefix: str = KEY_PREFIX,
        wait_seconds: float = 120.0,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._wait = wait_seconds
        self._heartbeat_every = heartbeat_seconds
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._heartbeat: asyncio.Task[None] | None = None

    def _client(self) -> Redis | None:
        client = self._redis.available()
        if client is not None and self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat_forever())
        return client

    def _failed(self, exc: BaseException) -> None:
        self._redis.outage.failed("e2b_fleet_redis_down", exc)

    @property
    def _instance_key(self) -> str:
        return self._prefix + "instance:" + self.instance

    @property
    def _instance_ttl_ms(self) -> int:
        # Three beats: one late beat does not make a live instance look dead.
        return int(self._heartbeat_every * 3 * 1000)

    async def _beat_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat only ages this instance
                await self._redis.client.set(self._instance_key, "1", px=self._instance_ttl_ms)
            await asyncio.sleep(self._heartbeat_every)

    # ---- the owner's lock and sandbox ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def owner_lock(self, owner: str) -> AsyncIterator[bool]:
        """Hold the fleet-wide lock of `owner` (True), or nothing when Redis is unusable
        (False: this process's own lock is then all there is)."""
        client = self._client()
        lock: Lock | None = None
        if client is not None:
            lock = Lock(
                client,
                self._prefix + "lock:" + owner,
                timeout=LOCK_SECONDS,
                sleep=0.05,
                blocking_timeout=self._wait,
                thread_local=False,
            )
            try:
                if not await lock.acquire():
                    # Held for longer than a creation can take: its holder is stuck.
                    log.warning("e2b_owner_lock_timeout", owner=owner)
                    lock = None
            except Exception as exc:
                self._failed(exc)
                lock = None
        if lock is None:
            yield False
            return
        try:
            async with renewed(lock, LOCK_SECONDS / 3):
                yield True
        finally:
            with contextlib.suppress(Exception):
                await lock.release()

    async def sandbox_of(self, owner: str) -> tuple[str, str] | None:
        """The owner's recorded sandbox as (id, template id), or None."""
        client = self._client()
        if client is None:
            return None
        try:
            sandbox_id = _text(await client.get(self._prefix + "owner:" + owner))
            if sandbox_id is None:
                return None
            key = self._prefix + "sandbox:" + sandbox_id
            template = _text(await client.hget(key, "template"))
        except Exception as exc:
            self._failed(exc)
            return None
        return (sandbox_id, template) if template else None

    async def record(
        self, sandbox_id: str, template: str, owner: str | None, *, created: bool
    ) -> None:
        """This instance uses `sandbox_id` (and made it, when `created`); it is `owner`'s."""
        client = self._client()
        if client is None:
            return
        key = self._prefix + "sandbox:" + sandbox_id
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(key, "template", template)
                pipe.hset(key, "user:" + self.instance, "1")
                if created:
                    pipe.hset(key, "creator", self.instance)
                pipe.expire(key, RECORD_SECONDS)
                # Alive from the first use on, before the heartbeat's first beat.
                pipe.set(self._instance_key, "1", px=self._instance_ttl_ms)
                if owner is not None:
                    pipe.set(self._prefix + "owner:" + owner, sandbox_id, ex=RECORD_SECONDS)
                await pipe.execute()
        except Exception as exc:
            self._failed(exc)

    async def forget(self, sandbox_id: str, owner: str | None) -> None:
        """`sandbox_id` is dead (killed): drop its records."""
        client = self._client()
        if client is None:
            return
        try:
            await client.delete(self._prefix + "sandbox:" + sandbox_id)
            if owner is not None:
                await client.eval(_DELETE_IF, 1, self._prefix + "owner:" + owner, sandbox_id)
        except Exception as exc:
            self._failed(exc)

    # ---- shutdown -------------------------------------------------------------------------------

    async def release(self, sandbox_id: str) -> bool:
        """This instance stops using `sandbox_id`; True when it should kill it (it made it and no
        live other instance uses it). False, too, when Redis cannot say: leaving a sandbox to
        E2B's timeout costs little, killing another instance's costs its user the kernel."""
        client = self._client()
        if client is None:
            return False
        key = self._prefix + "sandbox:" + sandbox_id
        try:
            await client.hdel(key, "user:" + self.instance)
            fields = {_text(k): _text(v) for k, v in (await client.hgetall(key)).items()}
            if fields.get("creator") != self.instance:
                return False
            users = (f for f in fields if f is not None and f.startswith("user:"))
            others = [f.removeprefix("user:") for f in users]
            for other in others:
                if await client.exists(self._prefix + "instance:" + other):
                    return False
        except Exception as exc:
            self._failed(exc)
            return False
        return True

    async def aclose(self) -> None:
        """Stop the heartbeat and say at once that this instance is gone."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
            with contextlib.suppress(Exception):
                await self._redis.client.delete(self._instance_key)


def _text(value: bytes | str | None) -> str | None:
    """A reply as text (the app's client decodes replies; a raw client would not)."""
    return value.decode() if isinstance(value, bytes) else value
