"""`fragments node`: a sandbox node. It owns a local sandbox service (confined kernels and dev
servers, their warm pools), runs the jobs of its stream and of the shared one (`worker.py`), and
serves on its port its health (`GET /healthz`) and its sandboxes' previews to the API tier.

Preview requests must carry the node key (`x-fragments-node-key`, derived from
FRAGMENTS_SECRET_KEY) and name the preview in `x-fragments-preview: <port>-<sandbox id>`; the
node then serves them as the app's preview proxy does. Anything else but /healthz is refused
(403), so the node port is of no use to the public even if it were reachable."""

from __future__ import annotations

import hmac
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fragments.config import Settings
from fragments.jobs.connection import NODE_KEY_HEADER, PREVIEW_HEADER, fleet_redis, node_key
from fragments.jobs.worker import NodeWorker
from fragments.observability.logs import configure_logging
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.proxy import PreviewProxy, PreviewProxyMiddleware

log = structlog.get_logger(__name__)

_GATED = (NODE_KEY_HEADER.encode(), PREVIEW_HEADER.encode())


def node_url(settings: Settings, host: str, port: int) -> str:
    """The URL the API tier reaches this node on: FRAGMENTS_NODE_URL, else http://host:port
    (the machine's name when bound to every interface)."""
    if settings.node_url:
        return settings.node_url.rstrip("/")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://{host}:{port}"


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return cast(bytes, value).decode("latin-1")
    return ""


class NodeGate:
    """Lets /healthz through; everything else needs the node key, and a preview request is
    turned into the preview host the node's proxy serves."""

    def __init__(self, app: ASGIApp, *, key: str, domain: str) -> None:
        self.app = app
        self.key = key
        self.domain = domain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        given = _header(scope, NODE_KEY_HEADER.encode())
        if not hmac.compare_digest(given.encode(), self.key.encode()):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            response = JSONResponse(
                {"error": "forbidden", "detail": "This port serves the API tier only."},
                status_code=403,
            )
            await response(scope, receive, send)
            return
        target = _header(scope, PREVIEW_HEADER.encode())
        if target:
            headers = [
                (k, v)
                for k, v in scope["headers"]
                if k.lower() != b"host" and k.lower() not in _GATED
            ]
            headers.append((b"host", f"{target}.{self.domain}".encode("latin-1")))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def create_node_app(settings: Settings, *, url: str) -> ASGIApp:
    """The node's ASGI app; its lifespan starts the sandboxes and the job loop."""
    configure_logging()
    node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    service = LocalSandboxService(settings)
    domain = settings.resolved_preview_domain
    proxy = PreviewProxy(domain, lambda: service, max_body_bytes=settings.preview_max_body_bytes)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        redis = fleet_redis(settings)
        worker = NodeWorker(settings, redis, service, node_id=node_id, url=url)
        try:
            await service.check()  # sets the host up and starts the warm pools
            await worker.start()
            yield
        finally:
            await worker.aclose()
            await service.aclose()
            await proxy.aclose()
            await redis.aclose()

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "node": node_id})

    inner = Starlette(routes=[Route("/healthz", healthz)], lifespan=lifespan)
    return NodeGate(PreviewProxyMiddleware(inner, proxy), key=node_key(settings), domain=domain)


def run_node(settings: Settings, *, host: str, port: int, log_level: str) -> None:
    """Serve a node until stopped (SIGTERM: running jobs get a few seconds to finish)."""
    import uvicorn

    app = create_node_app(settings, url=node_url(settings, host, port))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        proxy_headers=False,
    )


def start_local_node(port: int, *, wait: float = 60.0) -> subprocess.Popen[bytes]:
    """`fragments node` on 127.0.0.1:`port` beside this process (for `serve --workers N`
    with Redis: the workers are API processes sharing this one node); waits for its health."""
    import httpx

    command = [sys.executable, "-m", "fragments.cli", "node", "--host", "127.0.0.1"]
    proc = subprocess.Popen([*command, "--port", str(port)], env=dict(os.environ))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the sandbox node on port {port} did not start")


def shared_node_for_workers(workers: int) -> subprocess.Popen[bytes] | None:
    """`fragments serve --workers N` with Redis: one sandbox node beside the workers, each of
    them an API process of that small fleet (FRAGMENTS_EMBEDDED_NODE=false in their
    environment), so a conversation keeps its sandbox whichever worker answers. Without Redis,
    with one worker, or with FRAGMENTS_EMBEDDED_NODE=false already: nothing changes (None)."""
    settings = Settings()
    if workers < 2 or not settings.redis_url or not settings.embedded_node:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    node = start_local_node(port)
    os.environ["FRAGMENTS_EMBEDDED_NODE"] = "false"
    return node
