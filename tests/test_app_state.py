"""The lifespan builds the typed State once: services passed to `create_app` are used as given
(and closed at shutdown like the app's own), the shared objects exist before the first request,
and one Redis client serves them all."""

from __future__ import annotations

import httpx
import pytest

from fragments.app import create_app, state_of
from fragments.config import Settings
from fragments.redis_client import SharedRedis
from tests.fakes.sandboxes import FakeSandboxes
from tests.fakes.streamer import FakeStreamer

pytestmark = pytest.mark.anyio


async def test_injected_services_are_used_and_closed(settings: Settings) -> None:
    sandboxes, llm = FakeSandboxes(), FakeStreamer()
    app = create_app(settings, sandboxes=sandboxes, llm=llm)
    with pytest.raises(RuntimeError):
        state_of(app)  # nothing is built before the lifespan runs
    async with app.router.lifespan_context(app):
        state = state_of(app)
        assert state.sandboxes is sandboxes
        assert state.llm is llm
        assert state.redis is None  # no FRAGMENTS_REDIS_URL: memory serves
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert not sandboxes.closed
        assert not llm.closed
    assert sandboxes.closed
    assert llm.closed


async def test_one_redis_client_serves_every_shared_object(settings: Settings) -> None:
    """Given a client, the app builds none of its own: the limiter, the prepare credits and the
    response cache share its outage verdict (one failure sends all of them to memory)."""
    redis = SharedRedis.connect("redis://127.0.0.1:1/0")  # nothing listens: never reached here
    with_redis = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(with_redis, sandboxes=FakeSandboxes(), llm=FakeStreamer(), redis=redis)
    async with app.router.lifespan_context(app):
        state = state_of(app)
        assert state.redis is redis
        assert state.limiter.outage is redis.outage
        assert state.prepare_credits.outage is redis.outage
        await state.response_store.set("k", "v", 30)  # Redis refuses: memory keeps it
        assert not redis.outage.up()
        assert await state.response_store.get("k") == "v"
