"""The preview proxy's own body limit: it sits outside the app's middleware, so an oversized
upload to a preview is refused by the proxy (413 page) before it reaches the sandbox's server,
whether the size is announced or streamed. The upstream is a real server on a unix socket."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from fragments.sandbox.proxy import PreviewProxy, PreviewProxyMiddleware

pytestmark = pytest.mark.anyio

DOMAIN = "preview.test"
HOST = f"8501-abc123.{DOMAIN}"
LIMIT = 64 * 1024


class _Upstream:
    """Counts the body bytes it received, and echoes their number."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.received += size
        body = str(size).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class _OneSandbox:
    """The service seam as the proxy sees it: one live sandbox on one socket."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def preview_socket(self, sandbox_id: str, port: int) -> Path | None:
        return self.socket if (sandbox_id, port) == ("abc123", 8501) else None

    def preview_expired(self, sandbox_id: str) -> bool:
        return False


async def _not_the_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("a preview request reached the app")


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[httpx.AsyncClient, _Upstream]]:
    upstream = _Upstream()
    with tempfile.TemporaryDirectory(prefix="pv") as folder:
        socket = Path(folder) / "s"
        server = uvicorn.Server(uvicorn.Config(upstream, uds=str(socket), log_level="error"))
        task = asyncio.create_task(server.serve())
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
                await asyncio.sleep(0.01)
        proxy = PreviewProxy(DOMAIN, lambda: _OneSandbox(socket), max_body_bytes=LIMIT)  # type: ignore[arg-type,return-value]
        app = PreviewProxyMiddleware(_not_the_app, proxy)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, upstream
        await proxy.aclose()
        server.should_exit = True
        await task


async def test_a_body_within_the_limit_reaches_the_app(
    proxied: tuple[httpx.AsyncClient, _Upstream],
) -> None:
    client, upstream = proxied
    response = await client.post("/upload", content=b"x" * LIMIT, headers={"host": HOST})
    assert response.status_code == 200
    assert response.text == str(LIMIT)
    assert upstream.received == LIMIT


async def test_an_announced_oversized_body_is_refused(
    proxied: tuple[httpx.AsyncClient, _Upstream],
) -> None:
    client, upstream = proxied
    response = await client.post("/upload", content=b"x" * (LIMIT + 1), headers={"host": HOST})
    assert response.status_code == 413
    assert "too large" in response.text
    assert upstream.received == 0


async def test_a_streamed_oversized_body_is_refused(
    proxied: tuple[httpx.AsyncClient, _Upstream],
) -> None:
    client, upstream = proxied

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * (16 * 1024)

    response = await client.post("/upload", content=chunks(), headers={"host": HOST})
    assert response.status_code == 413
    assert upstream.received < 8 * 16 * 1024


async def test_a_malformed_content_length_is_refused(
    proxied: tuple[httpx.AsyncClient, _Upstream],
) -> None:
    client, _ = proxied
    request = client.build_request("POST", "/upload", content=b"abc", headers={"host": HOST})
    request.headers["content-length"] = "12abc"
    response = await client.send(request)
    assert response.status_code == 400
