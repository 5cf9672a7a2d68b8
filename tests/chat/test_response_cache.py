"""Response cache: the same request is answered from the cache, still streamed, without calling
the provider; `regenerate` bypasses it; Redis holds entries with a TTL and memory takes over
when Redis is unreachable."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from fragments.chat.response_cache import MemoryStore, RedisStore
from fragments.config import Settings
from fragments.redis_client import SharedRedis
from tests.chat.conftest import app_client, chat_body, names, post_chat
from tests.fakes import SAMPLE_FRAGMENT, FakeAnthropic, FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def test_a_repeated_request_is_replayed_without_the_provider(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    body = chat_body("CACHE-ME a counter", model="claude-sonnet-5-5", provider="anthropic")
    fake_anthropic.script(FragmentReply(chunk_size=2000))
    _, first = await post_chat(client, body)
    assert names(first)[-1] == "done"
    assert len(fake_anthropic.requests) == 1

    _, again = await post_chat(client, body)
    assert len(fake_anthropic.requests) == 1  # not called
    assert names(again)[0] == "provider"
    assert "partial" in names(again)
    assert names(again)[-3:] == ["fragment", "usage", "done"]
    assert again[-3].data == first[-3].data
    assert again[-2].data["input_tokens"] == 0
    assert again[-2].data["cost_usd"] == 0.0

    # regenerate: the provider is asked again.
    fake_anthropic.script(FragmentReply({**SAMPLE_FRAGMENT, "title": "Fresh"}))
    _, fresh = await post_chat(client, {**body, "config": {"regenerate": True}})
    assert len(fake_anthropic.requests) == 2
    assert fresh[-3].data["title"] == "Fresh"
    # ... and the new answer is what the cache replays next.
    _, replay = await post_chat(client, body)
    assert len(fake_anthropic.requests) == 2
    assert replay[-3].data["title"] == "Fresh"


async def test_other_prompts_models_and_own_keys_are_not_served_from_the_cache(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = FragmentReply()
    await post_chat(client, chat_body("CACHE-2 one"))
    await post_chat(client, chat_body("CACHE-2 two"))
    await post_chat(client, chat_body("CACHE-2 one", model="gpt-4.1-mini"))
    own = chat_body("CACHE-2 one", config={"apiKey": "user-key"})
    await post_chat(client, own)
    await post_chat(client, own)
    assert len(fake_openai.requests) == 5
    fake_openai.default = None


async def test_invalid_answers_are_not_cached(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply("not json at all"), FragmentReply())
    _, first = await post_chat(client, chat_body("CACHE-3"))
    assert names(first)[-1] == "error"
    _, second = await post_chat(client, chat_body("CACHE-3"))
    assert names(second)[-1] == "done"
    assert len(fake_openai.requests) == 2


async def test_cache_off(chat_settings: Settings, fake_openai: FakeOpenAI) -> None:
    settings = chat_settings.model_copy(update={"response_cache": False})
    fake_openai.script(FragmentReply(), FragmentReply())
    async with app_client(settings) as c:
        await post_chat(c, chat_body("CACHE-4"))
        await post_chat(c, chat_body("CACHE-4"))
    assert len(fake_openai.requests) == 2


async def test_redis_store_with_ttl_and_memory_fallback() -> None:
    memory = MemoryStore()
    redis = SharedRedis.connect(REDIS_URL)
    store = RedisStore(redis, memory)
    key = f"fragments:test:{uuid.uuid4().hex}"
    try:
        try:
            await redis.client.ping()
        except Exception:
            pytest.skip("Redis is not running on 127.0.0.1:6379")
        await store.set(key, "value", 30)
        assert await store.get(key) == "value"
        ttl = await redis.client.pttl(key)
        assert 0 < ttl <= 30_000
        assert await memory.get(key) is None  # Redis held it, not memory
        await redis.client.delete(key)
    finally:
        await redis.aclose()
    # Unreachable Redis: memory takes over, quickly, and Redis is left alone for a while.
    unreachable = SharedRedis.connect("redis://127.0.0.1:1/0")
    down = RedisStore(unreachable, memory)
    try:
        await down.set(key, "kept", 30)
        assert not unreachable.outage.up()
        assert await down.get(key) == "kept"
        assert await memory.get(key) == "kept"
    finally:
        await unreachable.aclose()


async def test_memory_store_expires_and_is_bounded() -> None:
    store = MemoryStore(max_entries=2)
    await store.set("a", "1", 0.0001)
    await store.set("b", "2", 30)
    await store.set("c", "3", 30)
    assert await store.get("a") is None
    assert await store.get("b") == "2"
    await store.set("d", "4", 30)
    assert await store.get("c") is None  # least recently used went first
    assert await store.get("d") == "4"
