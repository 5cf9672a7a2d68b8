"""Web sandboxes (Streamlit, Gradio) run confined with no network, served through the preview
proxy: HTTP and WebSocket through a real uvicorn, expired and unknown previews, isolation
between sandboxes, and Host spoofing against the app's own routes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import connect

from fragments.app import create_app, state_of
from fragments.config import Settings
from fragments.sandbox.local.build import TemplateEnv, build_template
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.proxy import parse_preview_host
from fragments.schemas import Fragment, WebResult

pytestmark = pytest.mark.anyio

STREAMLIT = "streamlit-developer"
GRADIO = "gradio-developer"
DOMAIN = "preview.test"
# A Streamlit BackMsg asking for a script run (`rerun_script` with an empty ClientState).
RERUN = b"Z\x00"


def streamlit_app(marker: str) -> str:
    return f"import streamlit as st\nst.title('{marker}')\n"


@pytest.fixture(scope="session")
def streamlit_env() -> TemplateEnv:
    return build_template(Settings(_env_file=None), STREAMLIT)


@pytest.fixture
def web_settings(sandbox_settings: Settings, streamlit_env: TemplateEnv) -> Settings:
    return sandbox_settings.model_copy(
        update={"preview_domain": DOMAIN, "sandbox_start_timeout_seconds": 60.0}
    )


@pytest.fixture
async def app(web_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(web_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def service_of(app: FastAPI) -> LocalSandboxService:
    service = state_of(app).sandboxes
    assert isinstance(service, LocalSandboxService)
    return service


def web_sandbox(app: FastAPI, sandbox_id: str) -> WebSandbox:
    """A live sandbox by id (the API keys owners by caller and conversation)."""
    found = next(s for s in service_of(app).sandboxes if s.id == sandbox_id)
    assert isinstance(found, WebSandbox)
    return found


async def run_app(
    client: httpx.AsyncClient, code: str, owner: str | None = "conv-web", template: str = STREAMLIT
) -> dict[str, Any]:
    body = {"fragment": {"template": template, "code": code}, "conversation_id": owner}
    response = await client.post("/api/sandbox", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def host_of(url: str) -> str:
    match = re.fullmatch(r"http://([^/]+)/", url)
    assert match, url
    return match.group(1)


def test_preview_host_parsing() -> None:
    assert parse_preview_host("8501-abc123.Preview.Test", DOMAIN) == (8501, "abc123")
    assert parse_preview_host("8501-abc123.preview.test.", DOMAIN) == (8501, "abc123")
    assert parse_preview_host("preview.test", DOMAIN) is None
    assert parse_preview_host("x.8501-abc.preview.test", DOMAIN) is None
    assert parse_preview_host("99999-abc.preview.test", DOMAIN) is None
    assert parse_preview_host("8501-abc.preview.test.evil", DOMAIN) is None
    assert parse_preview_host("8501-abc.localhost:8000", "localhost:8000") == (8501, "abc")


async def test_streamlit_preview_through_the_proxy(app: FastAPI, client: httpx.AsyncClient) -> None:
    data = await run_app(client, streamlit_app("first-version"))
    assert set(data) == {"sandbox_id", "template", "url", "error"}
    assert data["error"] is None
    sandbox_id = data["sandbox_id"]
    assert data["url"] == f"http://8501-{sandbox_id}.{DOMAIN}/"
    host = host_of(data["url"])

    page = await client.get("/", headers={"host": host})
    assert page.status_code == 200
    assert "<title>Streamlit</title>" in page.text
    # A preview is its own origin framed by the app: none of the app's headers apply to it.
    assert "content-security-policy" not in page.headers
    app_page = await client.get("/")
    csp = app_page.headers["content-security-policy"]
    assert f"frame-src http://*.{DOMAIN} https://*.{DOMAIN};" in csp
    assert "frame-ancestors 'self'" in csp

    health = await client.get("/_stcore/health", headers={"host": host})
    assert health.status_code == 200
    assert health.text == "ok"

    # The same conversation keeps its sandbox: the file is rewritten in place.
    again = await run_app(client, streamlit_app("second-version"))
    assert again["sandbox_id"] == sandbox_id
    sandbox = web_sandbox(app, sandbox_id)
    assert sandbox.starts == 1
    assert "second-version" in (sandbox.home / "app.py").read_text()


async def test_unknown_and_expired_previews_get_a_page(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    unknown = await client.get("/", headers={"host": f"8501-0123456789abcdef.{DOMAIN}"})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("text/html")
    assert "No such preview" in unknown.text

    data = await run_app(client, streamlit_app("soon-gone"), owner=None)
    host = host_of(data["url"])
    assert (await client.get("/_stcore/health", headers={"host": host})).status_code == 200
    assert await service_of(app).kill(data["sandbox_id"])
    gone = await client.get("/", headers={"host": host})
    assert gone.status_code == 410
    assert "This preview has expired" in gone.text


async def test_a_sandbox_is_only_reached_by_its_own_id_and_port(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    first = await run_app(client, streamlit_app("app-of-a"), owner="conv-a")
    second = await run_app(client, streamlit_app("app-of-b"), owner="conv-b")
    assert first["sandbox_id"] != second["sandbox_id"]
    a, b = web_sandbox(app, first["sandbox_id"]), web_sandbox(app, second["sandbox_id"])
    assert a.socket != b.socket
    assert a.uid != b.uid
    # Another port of the same sandbox is not served (only the template's port is forwarded).
    other_port = await client.get("/", headers={"host": f"7860-{first['sandbox_id']}.{DOMAIN}"})
    assert other_port.status_code == 404


async def test_host_spoofing_never_reaches_the_app_routes(client: httpx.AsyncClient) -> None:
    # A preview host is always the proxy's: the app's API is not reachable under it.
    spoofed = await client.post(
        "/api/sandbox",
        headers={"host": f"8501-0123456789abcdef.{DOMAIN}"},
        json={"fragment": {"template": "code-interpreter-v1", "code": "print(1)"}},
    )
    assert spoofed.status_code == 404
    assert "No such preview" in spoofed.text
    # Any other host is the app, with its headers.
    normal = await client.get("/healthz", headers={"host": f"evil.{DOMAIN}"})
    assert normal.status_code == 200
    assert "frame-ancestors 'self'" in normal.headers["content-security-policy"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def served(web_settings: Settings) -> AsyncIterator[tuple[FastAPI, int]]:
    """The app behind a real uvicorn (WebSockets need a real server)."""
    application = create_app(web_settings)
    port = _free_port()
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        assert not task.done()
    try:
        yield application, port
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)


async def _rendered(port: int, host: str, marker: str) -> bool:
    """Open a Streamlit session through the proxy and wait for the marker in its deltas."""
    async with connect(
        f"ws://{host}/_stcore/stream",
        host="127.0.0.1",
        port=port,
        subprotocols=["streamlit"],  # type: ignore[list-item]
        origin=f"http://{host}",  # type: ignore[arg-type]
    ) as ws:
        assert ws.subprotocol == "streamlit"
        await ws.send(RERUN)
        async with asyncio.timeout(20):
            while True:
                message = await ws.recv()
                if isinstance(message, bytes) and marker.encode() in message:
                    return True


async def test_streamlit_websocket_through_the_proxy(served: tuple[FastAPI, int]) -> None:
    _application, port = served
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        data = await run_app(http, streamlit_app("over-websocket"), owner="conv-ws")
        host = host_of(data["url"])
        assert await _rendered(port, host, "over-websocket")
        # Hot reload: the rewritten file is what a new session renders, same sandbox.
        again = await run_app(http, streamlit_app("hot-reloaded"), owner="conv-ws")
        assert again["sandbox_id"] == data["sandbox_id"]
        assert await _rendered(port, host, "hot-reloaded")
        page = await http.get("/", headers={"host": host})
        assert page.status_code == 200
        assert "content-security-policy" not in page.headers


async def test_a_crashing_app_reports_its_output(service: LocalSandboxService) -> None:
    # Gradio fails before its server answers: no preview, the app's own error in the result.
    build_template(service.settings, GRADIO)
    fragment = Fragment.model_validate(
        {"template": GRADIO, "code": "print('about to fail')\nraise SystemExit('no demo here')"}
    )
    result = await service.execute(fragment, owner="conv-crash")
    assert isinstance(result, WebResult)
    assert result.sandbox_id is None
    assert result.url is None
    assert result.error is not None
    assert result.error.name == "SandboxStartError"
    assert "about to fail" in result.error.value
    assert "no demo here" in result.error.value


@pytest.mark.slow
async def test_gradio_preview_through_the_proxy(client: httpx.AsyncClient) -> None:
    build_template(Settings(_env_file=None), GRADIO)
    code = (
        "import gradio as gr\n"
        "demo = gr.Interface(fn=lambda s: s[::-1], inputs='text', outputs='text',"
        " title='reverse-marker')\n"
    )
    data = await run_app(client, code, owner="conv-gradio", template=GRADIO)
    assert data["error"] is None
    assert data["url"] == f"http://7860-{data['sandbox_id']}.{DOMAIN}/"
    page = await client.get("/", headers={"host": host_of(data["url"])})
    assert page.status_code == 200
    assert "reverse-marker" in page.text
    assert "content-security-policy" not in page.headers


NEXT_PAGE = """export default function Home() {
  return <main className="p-4 text-xl">MARKER</main>;
}
"""
NUXT_PAGE = """<template>
  <div class="p-4 text-xl">MARKER</div>
</template>
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("template", "page"), [("nextjs-developer", NEXT_PAGE), ("vue-developer", NUXT_PAGE)]
)
async def test_node_preview_and_hot_reload(
    app: FastAPI, client: httpx.AsyncClient, template: str, page: str
) -> None:
    """A Node project runs from an overlay of the shared template; an edit is served in place."""
    data = await run_app(client, page.replace("MARKER", "first-node"), "n", template)
    assert data["error"] is None, data["error"]
    assert data["url"] == f"http://3000-{data['sandbox_id']}.{DOMAIN}/"
    host = host_of(data["url"])
    first = await client.get("/", headers={"host": host}, timeout=120)
    assert first.status_code == 200
    assert "first-node" in first.text
    again = await run_app(client, page.replace("MARKER", "second-node"), "n", template)
    assert again["sandbox_id"] == data["sandbox_id"]
    assert web_sandbox(app, data["sandbox_id"]).starts == 1
    async with asyncio.timeout(60):
        while True:
            second = await client.get("/", headers={"host": host}, timeout=60)
            if "second-node" in second.text:
                break
            await asyncio.sleep(0.2)
