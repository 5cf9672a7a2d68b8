"""`/api/ws`: live sandbox phases over a WebSocket, behind a real uvicorn (WebSockets need a real
server), with the real local backend; both auth modes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from fragments.app import create_app
from fragments.config import Settings
from tests.accounts import bearer, sign_up
from tests.modes import AuthMode, mode_settings

from .conftest import INTERPRETER

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    port: int
    http: httpx.AsyncClient
    mode: AuthMode

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/ws"


@pytest.fixture
async def served(sandbox_settings: Settings, auth_mode: AuthMode) -> AsyncIterator[Served]:
    app = create_app(sandbox_settings.model_copy(update=mode_settings(auth_mode)))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        assert not task.done()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            yield Served(port, http, auth_mode)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)


async def a_token(served: Served, name: str = "user") -> str:
    """A guest token with guests on (what the UI holds); an account's in production."""
    if served.mode == "guests":
        response = await served.http.post("/api/auth/guest", json={})
        assert response.status_code in (200, 201), response.text
        token: str = response.json()["access_token"]
        return token
    return (await sign_up(served.http, name)).access_token


def run_body(code: str) -> dict[str, Any]:
    return {"fragment": {"template": INTERPRETER, "code": code}}


async def frame(ws: ClientConnection, within: float = 60) -> dict[str, Any]:
    async with asyncio.timeout(within):
        data: dict[str, Any] = json.loads(await ws.recv())
    return data


async def signed_in(served: Served, token: str) -> ClientConnection:
    ws = await connect(served.ws_url)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert await frame(ws) == {"type": "ready"}
    return ws


async def until_end(ws: ClientConnection, job_id: str) -> list[dict[str, Any]]:
    frames = []
    while True:
        got = await frame(ws)
        assert got.get("job_id") == job_id, got
        frames.append(got)
        if got["type"] in ("result", "error"):
            return frames


async def test_a_socket_without_a_token_is_refused(served: Served) -> None:
    async with connect(served.ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": "0123456789abcdef"}))
        refused = await frame(ws)
        assert refused["type"] == "error"
        assert refused["error"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as closed:
            await frame(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
    # An auth frame without a token is an anonymous caller: no jobs to follow either.
    async with connect(served.ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": ""}))
        assert (await frame(ws))["error"] == "unauthorized"


async def test_a_forged_token_is_refused(served: Served) -> None:
    forged = jwt.encode(
        {"sub": "someone", "team": "t", "sid": "s", "exp": int(time.time()) + 600},
        "not-the-server-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )
    async with connect(served.ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": forged}))
        refused = await frame(ws)
        assert refused["type"] == "error"
        assert refused["error"] == "invalid_token"
        assert forged not in json.dumps(refused)
        with pytest.raises(ConnectionClosed):
            await frame(ws)


async def test_phases_then_the_result_and_a_replay_after_an_event_id(served: Served) -> None:
    token = await a_token(served)
    started = await served.http.post(
        "/api/sandbox",
        json=run_body("print('live')"),
        headers={**bearer(token), "Prefer": "respond-async"},
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    assert started.headers["x-job-id"] == job_id
    ws = await signed_in(served, token)
    async with ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        frames = await until_end(ws, job_id)
        phases = [f["phase"] for f in frames if f["type"] == "phase"]
        assert phases[0] == "queued"
        assert "running" in phases
        result = frames[-1]
        assert result["type"] == "result", result
        # The result is POST /api/sandbox's JSON, beside the frame's own keys.
        assert set(result) == {
            "type", "job_id", "id", "at", "sandbox_id", "template", "stdout", "stderr",
            "error", "results",
        }  # fmt: skip
        assert result["stdout"] == ["live\n"]
        ids = [f["id"] for f in frames]
        assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
        # Re-attach after the first event seen: the rest again, nothing before it.
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id, "after": ids[0]}))
        replayed = await until_end(ws, job_id)
        assert [f["id"] for f in replayed] == ids[1:]
        assert replayed[-1]["stdout"] == ["live\n"]


async def test_the_job_id_comes_with_json_and_sse_answers(served: Served) -> None:
    token = await a_token(served)
    plain = await served.http.post("/api/sandbox", json=run_body("1 + 1"), headers=bearer(token))
    assert plain.status_code == 200, plain.text
    job_id = plain.headers["x-job-id"]
    async with await signed_in(served, token) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        frames = await until_end(ws, job_id)
    assert frames[-1]["results"] == plain.json()["results"]


async def test_a_run_outlives_the_request_that_started_it(served: Served) -> None:
    token = await a_token(served)
    code = "import time\ntime.sleep(1.5)\nprint('still here')"
    headers = {**bearer(token), "Accept": "text/event-stream"}
    async with served.http.stream(
        "POST", "/api/sandbox", json=run_body(code), headers=headers
    ) as response:
        assert response.status_code == 200
        job_id = response.headers["x-job-id"]
        # The client goes away before the run ends (a reload, a closed tab).
    async with await signed_in(served, token) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        frames = await until_end(ws, job_id)
    assert frames[-1]["type"] == "result", frames[-1]
    assert frames[-1]["stdout"] == ["still here\n"]


async def test_another_users_or_teams_job_is_not_found(served: Served) -> None:
    owner = await a_token(served, "owner")
    started = await served.http.post(
        "/api/sandbox",
        json=run_body("secret = 42\nprint(secret)"),
        headers={**bearer(owner), "Prefer": "respond-async"},
    )
    job_id = started.json()["job_id"]
    other = await a_token(served, "other")
    async with await signed_in(served, other) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        refused = await frame(ws)
        unknown_id = "f" * 24
        await ws.send(json.dumps({"type": "subscribe", "job_id": unknown_id}))
        unknown = await frame(ws)
    assert refused == {
        "type": "error",
        "job_id": job_id,
        "error": "not_found",
        "detail": unknown["detail"],
    }
    assert unknown["error"] == "not_found"
    if served.mode == "production":
        # The same user acting for another team does not see the first team's jobs either.
        account = await sign_up(served.http, "teams")
        mine = await served.http.post(
            "/api/sandbox",
            json=run_body("print(1)"),
            headers={**account.headers, "Prefer": "respond-async"},
        )
        team = await served.http.post("/api/teams", json={"name": "side"}, headers=account.headers)
        assert team.status_code == 201, team.text
        switched = await served.http.post(
            "/api/auth/switch-team", json={"team_id": team.json()["id"]}, headers=account.headers
        )
        assert switched.status_code == 200, switched.text
        async with await signed_in(served, switched.json()["access_token"]) as ws:
            await ws.send(json.dumps({"type": "subscribe", "job_id": mine.json()["job_id"]}))
            assert (await frame(ws))["error"] == "not_found"


async def test_malformed_frames_get_clear_errors(served: Served) -> None:
    token = await a_token(served)
    async with await signed_in(served, token) as ws:
        await ws.send("not json")
        assert (await frame(ws))["error"] == "invalid_message"
        await ws.send(json.dumps({"type": "subscribe", "job_id": "../../etc/passwd"}))
        assert (await frame(ws))["error"] == "invalid_message"
        await ws.send(json.dumps({"type": "subscribe", "job_id": "a" * 24, "after": "x"}))
        assert (await frame(ws))["error"] == "invalid_message"
        await ws.send("x" * 10_000)
        assert (await frame(ws))["error"] == "invalid_message"
        await ws.send(json.dumps({"type": "ping"}))
        assert await frame(ws) == {"type": "pong"}


async def test_a_prepare_is_a_job_too(served: Served) -> None:
    token = await a_token(served)
    made = await served.http.post(
        "/api/conversations", json={"title": "prepared"}, headers=bearer(token)
    )
    assert made.status_code == 201, made.text
    prepared = await served.http.post(
        "/api/sandbox/prepare",
        json={"template": INTERPRETER, "conversation_id": made.json()["id"]},
        headers=bearer(token),
    )
    assert prepared.status_code == 200, prepared.text
    job_id = prepared.headers["x-job-id"]
    async with await signed_in(served, token) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        frames = await until_end(ws, job_id)
    assert frames[0]["phase"] == "queued"
    assert frames[-1]["type"] == "result"
    assert frames[-1]["prepared"] == prepared.json()


async def test_a_socket_does_not_outlive_its_sign_out(served: Served) -> None:
    """The token is checked again at every subscribe: signed out (the session revoked), the
    open socket is refused and closed with 4401 instead of following jobs on."""
    token = await a_token(served, "leaving")
    started = await served.http.post(
        "/api/sandbox",
        json=run_body("print('mine')"),
        headers={**bearer(token), "Prefer": "respond-async"},
    )
    job_id = started.json()["job_id"]
    async with await signed_in(served, token) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        assert (await until_end(ws, job_id))[-1]["type"] == "result"
        out = await served.http.post("/api/auth/logout", headers=bearer(token))
        assert out.status_code == 204, out.text
        await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
        refused = await frame(ws)
        assert refused["type"] == "error"
        assert refused["error"] == "invalid_token"
        assert token not in json.dumps(refused)
        with pytest.raises(ConnectionClosed) as closed:
            await frame(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
