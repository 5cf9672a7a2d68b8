"""Two API processes and two sandbox nodes on loopback, real Redis (a key prefix of this run's)
and real PostgreSQL: a conversation keeps its kernel whichever API process answers, its preview
is served through either, and a node killed mid-job loses no job."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from fragments.config import Settings
from fragments.jobs.fleet import FleetSandboxService
from tests.accounts import Account, sign_up
from tests.databases import APP_ROLE, PgDatabase
from tests.fleet.processes import PREVIEW_DOMAIN, Fleet, fleet_env

pytestmark = pytest.mark.anyio

INTERPRETER = "code-interpreter-v1"
STREAMLIT = "streamlit-developer"


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, pg_database: PgDatabase | None
) -> Iterator[Fleet]:
    if pg_database is None:
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is unreachable (it runs on dev and CI machines)")
    root = Path(tmp_path_factory.mktemp("fleet"))
    prefix = f"test-fleet-{secrets.token_hex(4)}:"
    env = fleet_env(
        root,
        prefix,
        FRAGMENTS_DATABASE_URL=pg_database.app_url,
        FRAGMENTS_DATABASE_MIGRATION_URL=pg_database.owner_url,
        FRAGMENTS_DATABASE_APP_ROLE=APP_ROLE,
    )
    fleet = Fleet(root, env)
    try:
        for kind in ("node", "node", "serve", "serve"):
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


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(decode_responses=True)
    yield client
    await client.aclose()


async def get(url: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url, **kwargs)  # type: ignore[arg-type]


def apis(fleet: Fleet) -> list[str]:
    return [p.url for p in fleet.procs if p.kind == "serve" and p.popen.poll() is None]


async def conversation(api: str, account: Account) -> str:
    async with httpx.AsyncClient(base_url=api, headers=account.headers) as client:
        made = await client.post("/api/conversations", json={"title": "fleet"})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


async def run(api: str, account: Account, conversation_id: str, code: str, **extra: object) -> dict:
    fragment = {"template": INTERPRETER, "code": code, **extra}
    async with httpx.AsyncClient(base_url=api, headers=account.headers, timeout=60) as client:
        response = await client.post(
            "/api/sandbox", json={"fragment": fragment, "conversation_id": conversation_id}
        )
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


@pytest.fixture
async def account(fleet: Fleet) -> Account:
    async with httpx.AsyncClient(base_url=apis(fleet)[0]) as client:
        return await sign_up(client, "fleet")


async def test_a_conversation_keeps_its_kernel_whichever_api_process_answers(
    fleet: Fleet, account: Account
) -> None:
    first, second = apis(fleet)
    for api in (first, second):
        ready = await get(f"{api}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
    conversation_id = await conversation(first, account)
    one = await run(first, account, conversation_id, "x = 1")
    two = await run(second, account, conversation_id, "x += 1\nprint(x)")
    assert two["stdout"] == ["2\n"]
    assert two["sandbox_id"] == one["sandbox_id"]
    assert "notice" not in two
    # Phases reach an SSE client of the other API process too.
    async with (
        httpx.AsyncClient(base_url=first, headers=account.headers, timeout=60) as client,
        client.stream(
            "POST",
            "/api/sandbox",
            json={
                "fragment": {"template": INTERPRETER, "code": "print(x * 10)"},
                "conversation_id": conversation_id,
            },
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        text = "".join([chunk async for chunk in response.aiter_text()])
    events = [line.removeprefix("event: ").strip() for line in text.splitlines()]
    assert "phase" in events
    assert "result" in events
    result_line = text.split("event: result", 1)[1].split("data: ", 1)[1].splitlines()[0]
    assert json.loads(result_line)["stdout"] == ["20\n"]
    # A prepare through one API process, its run through the other: one sandbox.
    other = await conversation(first, account)
    async with httpx.AsyncClient(base_url=first, headers=account.headers, timeout=60) as client:
        prepared = await client.post(
            "/api/sandbox/prepare", json={"template": INTERPRETER, "conversation_id": other}
        )
    assert prepared.status_code == 200, prepared.text
    after_prepare = await run(second, account, other, "print('prepared')")
    assert after_prepare["sandbox_id"] == prepared.json()["sandbox_id"]
    assert after_prepare["stdout"] == ["prepared\n"]
    # The conversation's stored result is the last one, whichever process stored it.
    async with httpx.AsyncClient(base_url=second, headers=account.headers) as client:
        stored = (await client.get(f"/api/conversations/{conversation_id}")).json()
    assert "20" in json.dumps(stored)


async def test_a_preview_is_served_through_either_api_process(
    fleet: Fleet, account: Account
) -> None:
    first, second = apis(fleet)
    conversation_id = await conversation(first, account)
    code = 'import streamlit as st\nst.write("hello from the fleet")'
    fragment = {"template": STREAMLIT, "code": code, "file_path": "app.py"}
    async with httpx.AsyncClient(base_url=first, headers=account.headers, timeout=60) as client:
        # A stored fragment (a turn re-sent as the UI does), so its run is stored and publishable.
        saved = await client.post(
            f"/api/conversations/{conversation_id}/turns",
            json={
                "turn_id": secrets.token_hex(4),
                "message": {"role": "user", "content": "an app"},
                "fragment": fragment,
            },
        )
        assert saved.status_code in (200, 201), saved.text
        ran = await client.post(
            "/api/sandbox",
            json={"conversation_id": conversation_id, "fragment_id": saved.json()["fragment_id"]},
        )
    assert ran.status_code == 200, ran.text
    body = ran.json()
    assert body["url"], body
    host = httpx.URL(body["url"]).host
    assert host.endswith("." + PREVIEW_DOMAIN)
    for api in (first, second):
        page = await get(api, headers={"Host": host}, timeout=30)
        assert page.status_code == 200, page.text
        assert "<html" in page.text.lower()
        # Streamlit's session socket, through this API process and on to the node.
        port = int(httpx.URL(api).port or 80)
        sock = socket.create_connection(("127.0.0.1", port))
        async with connect(
            f"ws://{host}/_stcore/stream",
            sock=sock,
            subprotocols=["streamlit"],  # type: ignore[list-item]
            origin=f"http://{host}",  # type: ignore[arg-type]
        ) as ws:
            assert ws.subprotocol == "streamlit"
    # Published from the other API process: the node holding the sandbox extends it.
    async with httpx.AsyncClient(base_url=second, headers=account.headers) as client:
        published = await client.post(
            "/api/publish", json={"sandbox_id": body["sandbox_id"], "duration": "1h"}
        )
    assert published.status_code == 201, published.text
    link = await get(f"{first}/s/{published.json()['id']}")
    assert link.status_code == 307
    assert link.headers["location"] == body["url"]
    # Killed from a process that is neither: its preview then says it has expired.
    service = FleetSandboxService.connect(
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            redis_url=fleet.env["FRAGMENTS_REDIS_URL"],
            fleet_prefix=fleet.env["FRAGMENTS_FLEET_PREFIX"],
            secret_key=fleet.env["FRAGMENTS_SECRET_KEY"],  # type: ignore[arg-type]
        )
    )
    try:
        assert await service.kill(body["sandbox_id"])
        assert not await service.kill(body["sandbox_id"])
    finally:
        await service.aclose()
    gone = await get(second, headers={"Host": host})
    assert gone.status_code == 410
    unknown = await get(first, headers={"Host": f"8501-{'0' * 16}.{PREVIEW_DOMAIN}"})
    assert unknown.status_code == 404
    # The node's port serves the API tier only.
    for node in (p for p in fleet.procs if p.kind == "node"):
        refused = await get(
            node.url, headers={"Host": host, "x-fragments-preview": host.split(".")[0]}
        )
        assert refused.status_code == 403
        forged = await get(
            node.url,
            headers={"x-fragments-preview": host.split(".")[0], "x-fragments-node-key": "guess"},
        )
        assert forged.status_code == 403
        assert (await get(f"{node.url}/healthz")).status_code == 200


async def test_a_node_killed_mid_job_loses_no_job(
    fleet: Fleet, account: Account, redis_client: aioredis.Redis
) -> None:
    first, second = apis(fleet)
    prefix = fleet.env["FRAGMENTS_FLEET_PREFIX"]
    conversation_id = await conversation(first, account)
    before = await run(first, account, conversation_id, "x = 1")
    holder_id = await redis_client.get(f"{prefix}sandbox:{before['sandbox_id']}")
    assert holder_id
    nodes = [p for p in fleet.procs if p.kind == "node"]
    ids = [(await get(f"{p.url}/healthz")).json()["node"] for p in nodes]
    holder = nodes[ids.index(holder_id)]

    slow = asyncio.create_task(
        run(second, account, conversation_id, "import time\ntime.sleep(3)\nprint('finished')")
    )
    # Killed once the job is running on it (its sandbox is busy with the cell).
    await asyncio.sleep(1.5)
    assert not slow.done()
    holder.kill9()
    async with asyncio.timeout(30):
        after = await slow
    assert after["stdout"] == ["finished\n"]  # run once to completion, as the user sees it
    assert after["sandbox_id"] != before["sandbox_id"]
    assert after["notice"]["code"] == "sandbox_restarted"
    assert await redis_client.xlen(f"{prefix}jobs:dead") == 0
    # The conversation goes on in its new sandbox, from either API process.
    again = await run(first, account, conversation_id, "print('still here')")
    assert again["stdout"] == ["still here\n"]
    assert again["sandbox_id"] == after["sandbox_id"]
    assert "notice" not in again
