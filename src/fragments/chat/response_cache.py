"""Response cache: the same request answered again without calling the provider.

The key is a hash of the prompt version, the provider and model, the sampling settings and the
whole prompt as the model would see it (system prompt with its templates, and the windowed
turns). A hit replays the stored answer into the sink in pieces, so the client still receives a
stream (`provider`, `partial`s, `fragment`, `usage` with zero tokens, `done`). Redis with a TTL
when `FRAGMENTS_REDIS_URL` is set (falling back to memory while it is unreachable), memory
otherwise. Requests with the caller's own server or key are not cached; `config.regenerate`
bypasses the cache (and stores the new answer).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import time
from dataclasses import asdict
from typing import Any

import structlog
from pydantic import ValidationError

from fragments.config import Settings
from fragments.llm.types import (
    AnswerSink,
    Attempt,
    Fallback,
    ImageInput,
    ModelCall,
    ModelStreamer,
    StreamResult,
    Usage,
)
from fragments.ports import ResponseStore
from fragments.redis_client import SharedRedis
from fragments.schemas import Fragment

log = structlog.get_logger(__name__)

# Bump when the prompt's wording or the answer's schema changes meaning.
PROMPT_VERSION = "2026-11-26.1"
_PIECE = 256


def cache_key(call: ModelCall) -> str:
    digest = hashlib.sha256()
    head = {
        "v": PROMPT_VERSION,
        "provider": call.provider_id,
        "model": call.model_id,
        "sampling": asdict(call.sampling),
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    digest.update(b"\0" + call.system.encode())
    for turn in call.turns:
        digest.update(b"\0" + turn.role.encode())
        for part in turn.parts:
            if isinstance(part, ImageInput):
                digest.update(b"\1" + part.media_type.encode() + b"\1" + part.data.encode())
            else:
                digest.update(b"\2" + part.encode())
    return "fragments:response:" + digest.hexdigest()


class MemoryStore:
    """A bounded LRU with expiry, per process."""

    def __init__(self, max_entries: int = 1000) -> None:
        self._items: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._items[key] = (time.monotonic() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


class RedisStore:
    """Redis with a TTL; while Redis is down (the one client's outage verdict) the memory store
    answers."""

    def __init__(self, redis: SharedRedis, fallback: MemoryStore) -> None:
        self._redis = redis
        self._fallback = fallback

    async def get(self, key: str) -> str | None:
        client = self._redis.available()
        if client is None:
            return await self._fallback.get(key)
        try:
            value = await client.get(key)
        except Exception as exc:  # any Redis failure: memory answers
            self._redis.outage.failed("response_cache_redis_down", exc)
            return await self._fallback.get(key)
        return value if isinstance(value, str) else None

    async def set(self, key: str, value: str, ttl: float) -> None:
        client = self._redis.available()
        if client is not None:
            try:
                await client.set(key, value, px=max(1, int(ttl * 1000)))
                return
            except Exception as exc:  # any Redis failure: memory keeps it
                self._redis.outage.failed("response_cache_redis_down", exc)
        await self._fallback.set(key, value, ttl)


class _Tee:
    """Passes an answer through to the real sink and keeps its text."""

    __slots__ = ("parts", "sink")

    def __init__(self, sink: AnswerSink) -> None:
        self.sink = sink
        self.parts: list[str] = []

    def started(
        self, provider: str, model: str, fallback: bool, reason: Fallback | None = None
    ) -> None:
        self.sink.started(provider, model, fallback, reason)

    def delta(self, text: str) -> None:
        self.parts.append(text)
        self.sink.delta(text)

    def reset(self, reason: str) -> None:
        self.parts.clear()
        self.sink.reset(reason)

    def abandoned(self, attempt: Attempt) -> None:
        self.sink.abandoned(attempt)


class CachedStreamer:
    """A `ModelStreamer` in front of another, answering repeated requests from the cache."""

    def __init__(
        self,
        inner: ModelStreamer,
        store: ResponseStore,
        ttl: float,
        *,
        regenerate: bool = False,
    ) -> None:
        self.inner = inner
        self.store = store
        self.ttl = ttl
        self.regenerate = regenerate

    async def stream(self, call: ModelCall, sink: AnswerSink) -> StreamResult:
        if call.api_key is not None or call.base_url is not None:
            return await self.inner.stream(call, sink)
        key = cache_key(call)
        if not self.regenerate:
            stored = await self.store.get(key)
            if stored is not None:
                return await self._replay(json.loads(stored), sink)
        tee = _Tee(sink)
        result = await self.inner.stream(call, tee)
        text = "".join(tee.parts)
        if not result.truncated and _cacheable(text):
            entry = {"provider": result.provider, "model": result.model, "text": text}
            await self.store.set(key, json.dumps(entry), self.ttl)
        return result

    async def _replay(self, entry: dict[str, Any], sink: AnswerSink) -> StreamResult:
        text = str(entry["text"])
        sink.started(str(entry["provider"]), str(entry["model"]), False)
        for i in range(0, len(text), _PIECE):
            sink.delta(text[i : i + _PIECE])
            await asyncio.sleep(0)  # let the chat layer's ticker send partials
        log.info("response_cache_hit", provider=entry["provider"], model=entry["model"])
        return StreamResult(
            provider=str(entry["provider"]),
            model=str(entry["model"]),
            usage=Usage(),
            stop_reason="cached",
            cost_usd=0.0,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def _cacheable(text: str) -> bool:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return False
    try:
        fragment = Fragment.model_validate_json(text[start : end + 1])
    except ValidationError:
        return False
    return bool(fragment.code.strip() or fragment.files)


def make_store(settings: Settings, redis: SharedRedis | None) -> ResponseStore:
    """The response cache's store: Redis when the app has a client, this process's memory else."""
    memory = MemoryStore(settings.response_cache_max_entries)
    if redis is not None:
        return RedisStore(redis, memory)
    return memory


def cached(
    store: ResponseStore, settings: Settings, inner: ModelStreamer, *, regenerate: bool
) -> CachedStreamer:
    """The app's response cache in front of `inner`, for one request."""
    return CachedStreamer(inner, store, settings.response_cache_ttl_seconds, regenerate=regenerate)
