"""An API process killed (`kill -9`) in the middle of a run: the client re-attaches to the job
through the other API process's `/api/ws` and gets its result. Two API processes and one node
on loopback, real Redis (a key prefix of this run's) and real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from tests.accounts import sign_up
from tests.databases import APP_ROLE, PgDatabase
from tests.fleet.processes import Fleet, Proc, fleet_env

pytestmark = pytest.mark.anyio

INTERPRETER = "code-interpreter-v1"


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, pg_database: PgDatabase | None
) -> Iterator[Fleet]:
    if pg_database is None:
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is unreachable (it runs on dev and CI machines)")
    root = Path(tmp_path_factory.mktemp("reattach"))
    prefix = f"test-reattach-{secrets.token_hex(4)}:"
    env = fleet_env(
        root,
        prefix,
        FRAGMENTS_DATABASE_URL=pg_database.app_url,
        FRAGMENTS_DATABASE_MIGRATION_URL=pg_database.owner_url,
        FRAGMENTS_DATABASE_APP_ROLE=APP_ROLE,
    )
    fleet = Fleet(root, env)
    try:
        for kind in ("node", "serve", "serve"):
            fleet.start(kind)
        yield fleet
    finally:
        fleet.stop()
        asyncio.run(_drop_keys(prefix))


async def _drop_keys(prefix: str) -> None:
    client = aioredis.Redis(decode_responses=True)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


async def frame(ws: ClientConnection, within: float = 120) -> dict[str, Any]:
    async with asyncio.timeout(within):
        data: dict[str, Any] = json.loads(await ws.recv())
    return data


async def signed_in(api: Proc, token: str) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{api.port}/api/ws")
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert await frame(ws) == {"type": "ready"}
    return ws


async def test_a_client_reattaches_through_another_api_process_after_a_kill_9(
    fleet: Fleet,
) -> None:
    first, second = [p for p in fleet.procs if p.kind == "serve"]
    async with httpx.AsyncClient(base_url=first.url, timeout=60) as client:
        account = await sign_up(client, "reattach")
        made = await client.post(
            "/api/conversations", json={"title": "reattach"}, headers=account.headers
        )
        conversation_id = made.json()["id"]
        # Long enough to kill the API process while the node runs it.
        code = "import time\nprint('before')\ntime.sleep(4)\nprint('after')"
        started = await client.post(
            "/api/sandbox",
            json={
                "fragment": {"template": INTERPRETER, "code": code},
                "conversation_id": conversation_id,
            },
            headers={**account.headers, "Prefer": "respond-async"},
        )
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]

    ws = await signed_in(first, account.access_token)
    await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1].get("phase") != "running":
        got = await frame(ws)
        assert got["type"] == "phase", got
        seen.append(got)
    first.kill9()  # mid-run: the socket and the process that submitted the job are gone
    await ws.close()

    async with await signed_in(second, account.access_token) as again:
        await again.send(
            json.dumps({"type": "subscribe", "job_id": job_id, "after": seen[-1]["id"]})
        )
        rest = []
        while not rest or rest[-1]["type"] == "phase":
            rest.append(await frame(again))
    result = rest[-1]
    assert result["type"] == "result", result
    assert result["job_id"] == job_id
    assert "".join(result["stdout"]) == "before\nafter\n"
    # Another account cannot follow it through either process.
    async with httpx.AsyncClient(base_url=second.url, timeout=60) as client:
        other = await sign_up(client, "other")
    async with await signed_in(second, other.access_token) as foreign:
        await foreign.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        refused = await frame(foreign)
    assert refused["error"] == "not_found"
    assert "stdout" not in refused


async def test_every_worker_of_serve_workers_2_serves_the_jobs_socket(tmp_path: Path) -> None:
    """`fragments serve --workers 2` with Redis: whichever worker a socket lands on (the kernel
    spreads the connections), it follows a job another worker may have started."""
    prefix = f"test-ws-workers-{secrets.token_hex(4)}:"
    fleet = Fleet(tmp_path, fleet_env(tmp_path, prefix))
    try:
        app = fleet.start("serve", "--workers", "2", embedded=True)
        async with httpx.AsyncClient(base_url=app.url, timeout=60) as client:
            account = await sign_up(client, "ws-workers")
            code = "import time\ntime.sleep(1)\nprint('from a worker')"
            started = await client.post(
                "/api/sandbox",
                json={"fragment": {"template": INTERPRETER, "code": code}},
                headers={**account.headers, "Prefer": "respond-async"},
            )
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]

        async def follow_once() -> dict[str, Any]:
            async with await signed_in(app, account.access_token) as ws:
                await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
                while True:
                    got = await frame(ws)
                    if got["type"] != "phase":
                        return got

        ends = await asyncio.gather(*(follow_once() for _ in range(6)))
        assert {e["type"] for e in ends} == {"result"}, ends
        assert {"".join(e["stdout"]) for e in ends} == {"from a worker\n"}
    finally:
        fleet.stop()
        await _drop_keys(prefix)
