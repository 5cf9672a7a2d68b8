"""A fleet job that fails (no sandbox node is alive) ends, on `/api/ws`, with an error frame of
the HTTP API's own shape: the same `error` code and `detail` the JSON answer gives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from fragments.app import create_app
from fragments.config import Settings
from tests.accounts import sign_up
from tests.modes import AuthMode, mode_settings
from tests.web.app_process import free_port

pytestmark = pytest.mark.anyio

CELL = {"template": "code-interpreter-v1", "code": "print(1)"}


@pytest.fixture
async def api(db_settings: Settings, auth_mode: AuthMode) -> AsyncIterator[str]:
    """An API process of a fleet with no node, behind a real uvicorn."""
    prefix = f"test-ws-errors-{secrets.token_hex(4)}:"
    settings = db_settings.model_copy(
        update={
            **mode_settings(auth_mode),
            "embedded_node": False,
            "redis_url": "redis://127.0.0.1:6379/0",
            "fleet_prefix": prefix,
            "rate_limits": False,
        }
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        assert not task.done()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
        redis = Redis(decode_responses=True)
        async for key in redis.scan_iter(match=f"{prefix}*"):
            await redis.delete(key)
        await redis.aclose()


async def test_a_failed_job_ends_with_the_http_apis_error_shape(
    api: str, auth_mode: AuthMode
) -> None:
    async with httpx.AsyncClient(base_url=f"http://{api}", timeout=60) as http:
        if auth_mode == "guests":
            token = (await http.post("/api/auth/guest", json={})).json()["access_token"]
        else:
            token = (await sign_up(http, "ws-errors")).access_token
        headers = {"Authorization": f"Bearer {token}"}
        plain = await http.post("/api/sandbox", json={"fragment": CELL}, headers=headers)
        started = await http.post(
            "/api/sandbox",
            json={"fragment": CELL},
            headers={**headers, "Prefer": "respond-async"},
        )
    assert plain.status_code == 503, plain.text
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    frames: list[dict[str, Any]] = []
    # A client that can set headers signs in with the handshake instead of a first frame.
    async with connect(f"ws://{api}/api/ws", additional_headers=headers) as ws:
        assert json.loads(await ws.recv()) == {"type": "ready"}
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        async with asyncio.timeout(60):
            while not frames or frames[-1]["type"] == "phase":
                frames.append(json.loads(await ws.recv()))
    assert [f.get("phase") for f in frames[:-1]] == ["queued"]
    failed = frames[-1]
    assert failed["type"] == "error"
    assert {k: failed[k] for k in ("error", "detail")} == plain.json()
    assert set(failed) == {"type", "job_id", "id", "at", "error", "detail"}
