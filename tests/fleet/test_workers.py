"""`fragments serve --workers 2` with Redis on one machine: the workers are API processes sharing
one sandbox node, so a conversation keeps its kernel whichever worker answers."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests.accounts import sign_up
from tests.fleet.processes import Fleet, fleet_env

pytestmark = pytest.mark.anyio


async def _drop_keys(prefix: str) -> None:
    client = aioredis.Redis(decode_responses=True)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


async def test_two_workers_share_one_node(tmp_path: Path) -> None:
    prefix = f"test-workers-{secrets.token_hex(4)}:"
    fleet = Fleet(tmp_path, fleet_env(tmp_path, prefix))
    try:
        app = fleet.start("serve", "--workers", "2", embedded=True)
        async with httpx.AsyncClient(base_url=app.url, timeout=60) as client:
            account = await sign_up(client, "workers")
            client.headers.update(account.headers)
            made = await client.post("/api/conversations", json={"title": "workers"})
            conversation_id = made.json()["id"]

            async def run(code: str) -> dict[str, object]:
                fragment = {"template": "code-interpreter-v1", "code": code}
                response = await client.post(
                    "/api/sandbox", json={"fragment": fragment, "conversation_id": conversation_id}
                )
                assert response.status_code == 200, response.text
                body: dict[str, object] = response.json()
                return body

            first = await run("x = 0")
            # Several connections at once, so both workers answer some of them.
            for _ in range(3):
                await asyncio.gather(*(run("x += 1") for _ in range(2)))
            last = await run("print(x)")
            assert last["stdout"] == ["6\n"]
            assert last["sandbox_id"] == first["sandbox_id"]
        # One node beat into the registry: the workers run no sandbox of their own.
        redis = aioredis.Redis(decode_responses=True)
        try:
            assert len(await redis.smembers(f"{prefix}nodes")) == 1
        finally:
            await redis.aclose()
    finally:
        fleet.stop()
        await _drop_keys(prefix)
