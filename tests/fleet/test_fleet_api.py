"""An API process of a fleet (FRAGMENTS_EMBEDDED_NODE=false) when the fleet cannot take a job:
a full queue, no live node, Redis down — each a clear 503 with Retry-After, nothing stored; and
an embedded app is unaffected by Redis being down."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from fragments.app import create_app
from fragments.config import Settings
from fragments.jobs.fleet import pick_node
from fragments.jobs.keys import FleetKeys
from fragments.jobs.registry import FleetRegistry, NodeInfo
from tests.modes import AuthMode, a_conversation, sign_in_for_mode
from tests.web.app_process import free_port

pytestmark = pytest.mark.anyio

CELL = {"template": "code-interpreter-v1", "code": "print(1)"}


async def _client(settings: Settings, mode: AuthMode) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await sign_in_for_mode(client, mode)
            yield client


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test-fleet-api-{secrets.token_hex(4)}:"
    yield prefix
    redis = Redis(decode_responses=True)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)
    await redis.aclose()


async def _run(client: httpx.AsyncClient) -> httpx.Response:
    conversation_id = await a_conversation(client, "fleet-api")
    return await client.post(
        "/api/sandbox", json={"fragment": CELL, "conversation_id": conversation_id}
    )


async def test_a_full_queue_answers_503_with_retry_after(
    db_settings: Settings, auth_mode: AuthMode, prefix: str
) -> None:
    settings = db_settings.model_copy(
        update={
            "embedded_node": False,
            "redis_url": "redis://127.0.0.1:6379/0",
            "fleet_prefix": prefix,
            "job_queue_max": 2,
            "job_wait_seconds": 5.0,
            "rate_limits": False,
        }
    )
    keys = FleetKeys(prefix)
    redis = Redis(decode_responses=True)
    # A node that is alive and busy: no warm slot, and the shared stream of new sandboxes
    # already holds two jobs.
    registry = FleetRegistry(redis, keys, heartbeat_seconds=30)
    await registry.heartbeat(NodeInfo("busy", "http://127.0.0.1:1", {"code-interpreter-v1": 0}))
    for _ in range(2):
        await redis.xadd(keys.new_sandboxes, {"job": "{}"})
    try:
        async for client in _client(settings, auth_mode):
            refused = await _run(client)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "queue_full"
            assert int(refused.headers["Retry-After"]) > 0
            assert await redis.xlen(keys.new_sandboxes) == 2
    finally:
        await redis.aclose()


async def test_status_counts_the_fleets_nodes_and_queued_jobs(
    db_settings: Settings, auth_mode: AuthMode, prefix: str
) -> None:
    settings = db_settings.model_copy(
        update={
            "embedded_node": False,
            "redis_url": "redis://127.0.0.1:6379/0",
            "fleet_prefix": prefix,
            "rate_limits": False,
        }
    )
    keys = FleetKeys(prefix)
    redis = Redis(decode_responses=True)
    registry = FleetRegistry(redis, keys, heartbeat_seconds=30)
    try:
        async for client in _client(settings, auth_mode):
            empty = (await client.get("/api/status")).json()
            assert empty["fleet"] == {"nodes": 0, "queued_jobs": 0, "oldest_job_seconds": 0.0}
            assert empty["sandbox"]["status"] == "down"  # no node to run anything
            for name in ("node-a", "node-b"):
                await registry.heartbeat(
                    NodeInfo(name, "http://127.0.0.1:1", {"code-interpreter-v1": 1})
                )
            for _ in range(3):
                await redis.xadd(keys.new_sandboxes, {"job": "{}"})
            await redis.xadd(keys.node_jobs("node-a"), {"job": "{}"})
            busy = await client.get("/api/status", headers={"Authorization": ""})
            assert busy.status_code == 200, busy.text
            fleet = busy.json()["fleet"]
            assert (fleet["nodes"], fleet["queued_jobs"]) == (2, 4)
            assert fleet["oldest_job_seconds"] >= 0
            assert busy.json()["sandbox"]["status"] == "up"
            assert "node-a" not in busy.text
            assert "127.0.0.1" not in busy.text
    finally:
        await redis.aclose()


async def test_no_live_node_answers_503(
    db_settings: Settings, auth_mode: AuthMode, prefix: str
) -> None:
    settings = db_settings.model_copy(
        update={
            "embedded_node": False,
            "redis_url": "redis://127.0.0.1:6379/0",
            "fleet_prefix": prefix,
            "rate_limits": False,
        }
    )
    async for client in _client(settings, auth_mode):
        refused = await _run(client)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "sandbox_unavailable"
        assert refused.headers["Retry-After"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503


async def test_redis_down_is_a_clear_503_for_fleet_jobs(
    db_settings: Settings, auth_mode: AuthMode
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = db_settings.model_copy(
        update={"embedded_node": False, "redis_url": down, "rate_limits": False}
    )
    async for client in _client(settings, auth_mode):
        refused = await _run(client)
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["error"] == "fleet_unavailable"
        assert isinstance(body["detail"], str)
        assert "queue" in body["detail"]
        assert refused.headers["Retry-After"]
        publish = await client.post(
            "/api/sandbox/prepare",
            json={
                "template": "code-interpreter-v1",
                "conversation_id": await a_conversation(client, "p"),
            },
        )
        assert publish.status_code == 503
        # The rest of the app still serves.
        assert (await client.get("/api/templates")).status_code == 200


@pytest.mark.auth_modes("guests")
async def test_an_embedded_app_runs_sandboxes_with_redis_down(
    db_settings: Settings, auth_mode: AuthMode
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    settings = db_settings.model_copy(
        update={"redis_url": down, "sandbox_pool_sizes": {}, "rate_limits": False}
    )
    assert settings.embedded_node
    async for client in _client(settings, auth_mode):
        ran = await _run(client)
        assert ran.status_code == 200, ran.text
        assert ran.json()["stdout"] == ["1\n"]


def test_new_sandboxes_go_to_the_node_with_the_most_spare_warm_slots() -> None:
    a = NodeInfo("a", "http://a", {"code-interpreter-v1": 2})
    b = NodeInfo("b", "http://b", {"code-interpreter-v1": 1, "streamlit-developer": 1})
    assert pick_node([a, b], [0, 0], "code-interpreter-v1") is a
    # Jobs already in a node's stream use its slots up: b has one to spare, a none.
    assert pick_node([a, b], [2, 0], "code-interpreter-v1") is b
    assert pick_node([a, b], [0, 0], "streamlit-developer") is b
    # No node with a slot to spare: the shared stream (None).
    assert pick_node([a, b], [2, 1], "code-interpreter-v1") is None
    assert pick_node([], [], "code-interpreter-v1") is None
