"""The preview proxy: `<port>-<sandbox id>.<preview domain>` is served by that sandbox.

A pure ASGI middleware placed outside every other one: a request whose Host names a preview
never reaches the app's routes (so a spoofed Host cannot borrow the app's origin, and the app's
security headers, such as `frame-ancestors 'self'`, never land on a preview, which the app's
page frames from another origin). HTTP (streamed both ways) and WebSocket (hot reload,
Streamlit's session, Gradio's queue) are relayed to the sandbox's unix socket, with Host and
Origin rewritten to what the dev server inside expects. An unknown or expired sandbox gets a
short HTML page (404 / 410), a sandbox whose server does not answer a 502 page.

In a fleet the sandbox lives on a node: the service says where (`RemotePreviews`) and the
request is forwarded, HTTP and WebSocket alike, to the node's port with the headers the node
asks for; the node's own proxy then serves it as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from fragments.ports import RemotePreview, RemotePreviews
from fragments.sandbox.service import SandboxService

log = structlog.get_logger(__name__)

_LABEL = re.compile(r"^([0-9]{1,5})-([0-9a-z]{1,64})$")
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
# Headers only an API process may send to a node: never passed on from a client.
_FLEET_ONLY = (b"x-fragments-node-key", b"x-fragments-preview")
# Headers a browser sends on a WebSocket handshake that the dev server may care about.
_WS_FORWARDED = (b"cookie", b"user-agent", b"accept-language", b"authorization")
_MAX_CLIENTS = 64
_WS_MAX_MESSAGE = 64 * 1024 * 1024


def parse_preview_host(host: str, domain: str) -> tuple[int, str] | None:
    """(port, sandbox id) when `host` is `<port>-<id>.<domain>` (case-insensitive), else None."""
    host = host.strip().lower().rstrip(".")
    suffix = "." + domain.lower()
    if not host.endswith(suffix):
        return None
    match = _LABEL.match(host[: -len(suffix)])
    if match is None:
        return None
    port = int(match.group(1))
    if not 0 < port < 65536:
        return None
    return port, match.group(2)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return cast(bytes, value).decode("latin-1")
    return ""


_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>{title}</title>
<style>body{{font:16px system-ui,sans-serif;margin:3rem auto;max-width:34rem;padding:0 1rem;
color:#333}}h1{{font-size:1.3rem}}</style><h1>{title}</h1><p>{text}</p></html>"""


class _BodyTooLarge(Exception):
    """Raised from the streamed request body once it passes the preview body limit."""


async def _too_large(send: Send, limit: int) -> None:
    await _page(
        send,
        413,
        "The request is too large",
        f"Previews accept request bodies of up to {limit // (1024 * 1024)} MB.",
    )


async def _page(send: Send, status: int, title: str, text: str) -> None:
    body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


Connector = Callable[[str, list[tuple[str, str]], list[Subprotocol]], Awaitable[ClientConnection]]


@dataclass(frozen=True)
class _Upstream:
    """Where a preview request goes: a sandbox's unix socket here, or a node's port."""

    client: httpx.AsyncClient
    # The URL's scheme and authority (`http://127.0.0.1:<port>` for a socket, the node's URL).
    base: str
    # Host and Origin sent upstream; None keeps the client's (a node rewrites them itself).
    host: str | None
    origin: str | None
    extra: tuple[tuple[str, str], ...]
    connect_ws: Connector
    forget: Callable[[], None]
    label: str


class PreviewProxy:
    """Pooled HTTP clients, one per sandbox socket or node; closed with the app."""

    def __init__(
        self,
        domain: str,
        services: Callable[[], SandboxService | None],
        max_body_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        self.domain = domain
        self.services = services
        # The app's body limit sits inside this middleware, so previews need their own.
        self.max_body_bytes = max_body_bytes
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _pooled(self, key: str, transport: httpx.AsyncHTTPTransport) -> httpx.AsyncClient:
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        # No read timeout: a preview may stream (server-sent events, long polls) for as long
        # as its sandbox lives.
        timeout = httpx.Timeout(connect=5.0, read=None, write=30.0, pool=10.0)
        client = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
        self._clients[key] = client
        while len(self._clients) > _MAX_CLIENTS:
            _, old = self._clients.popitem(last=False)
            self._close_later(old)
        return client

    def client(self, socket: Path) -> httpx.AsyncClient:
        """The client for a sandbox's unix socket."""
        return self._pooled(str(socket), httpx.AsyncHTTPTransport(uds=str(socket), retries=0))

    def node_client(self, base_url: str) -> httpx.AsyncClient:
        """The client for a node's port."""
        return self._pooled(base_url, httpx.AsyncHTTPTransport(retries=0))

    def _close_later(self, client: httpx.AsyncClient) -> None:
        task = asyncio.create_task(client.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def forget(self, key: Path | str) -> None:
        client = self._clients.pop(str(key), None)
        if client is not None:
            self._close_later(client)

    def socket_upstream(self, socket: Path, port: int) -> _Upstream:
        """A sandbox served by this process, through its unix socket."""
        local = f"127.0.0.1:{port}"

        async def connect_ws(
            uri: str, headers: list[tuple[str, str]], subprotocols: list[Subprotocol]
        ) -> ClientConnection:
            return await unix_connect(
                str(socket),
                uri,
                subprotocols=subprotocols or None,
                additional_headers=headers,
                max_size=_WS_MAX_MESSAGE,
                open_timeout=10,
                user_agent_header=None,
            )

        return _Upstream(
            client=self.client(socket),
            base=f"http://{local}",
            host=local,
            origin=f"http://{local}",
            extra=(),
            connect_ws=connect_ws,
            forget=lambda: self.forget(socket),
            label=str(socket),
        )

    def node_upstream(self, target: RemotePreview) -> _Upstream:
        """A sandbox served by a node: its port, with the headers it asks for."""
        base = target.base_url.rstrip("/")

        async def connect_ws(
            uri: str, headers: list[tuple[str, str]], subprotocols: list[Subprotocol]
        ) -> ClientConnection:
            return await connect(
                uri,
                subprotocols=subprotocols or None,
                additional_headers=headers,
                max_size=_WS_MAX_MESSAGE,
                open_timeout=10,
                user_agent_header=None,
                proxy=None,
            )

        return _Upstream(
            client=self.node_client(base),
            base=base,
            host=None,
            origin=None,
            extra=target.headers,
            connect_ws=connect_ws,
            forget=lambda: self.forget(base),
            label=base,
        )

    async def aclose(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(c.aclose() for c in clients), *self._closing, return_exceptions=True)


async def _refuse(scope: Scope, send: Send, *, expired: bool) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
    elif expired:
        await _page(
            send,
            410,
            "This preview has expired",
            "The sandbox that served it was stopped after a period without use. "
            "Run the fragment again to get a new preview.",
        )
    else:
        await _page(
            send,
            404,
            "No such preview",
            "No sandbox serves this address. Previews are only reachable while their "
            "sandbox is running; run the fragment again to get a new preview.",
        )


class PreviewProxyMiddleware:
    """Routes preview hosts to their sandboxes; everything else goes to the app."""

    def __init__(self, app: ASGIApp, proxy: PreviewProxy) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        target = parse_preview_host(_header(scope, b"host"), self.proxy.domain)
        if target is None:
            await self.app(scope, receive, send)
            return
        port, sandbox_id = target
        service = self.proxy.services()
        if isinstance(service, RemotePreviews):
            remote = await service.preview_target(sandbox_id, port)
            if remote is None or remote == "expired":
                await _refuse(scope, send, expired=remote == "expired")
                return
            upstream = self.proxy.node_upstream(remote)

            def touch() -> None:
                return None  # the node counts the traffic it relays

        else:
            socket = service.preview_socket(sandbox_id, port) if service is not None else None
            if socket is None:
                expired = service is not None and service.preview_expired(sandbox_id)
                await _refuse(scope, send, expired=expired)
                return
            upstream = self.proxy.socket_upstream(socket, port)

            # An open session (Streamlit's, a dev server's hot reload) keeps its sandbox alive.
            def touch() -> None:
                if service is not None:
                    service.preview_socket(sandbox_id, port)

        if scope["type"] == "http":
            await self._http(scope, receive, send, upstream)
        else:
            await self._websocket(scope, receive, send, upstream, touch)

    async def _http(self, scope: Scope, receive: Receive, send: Send, upstream: _Upstream) -> None:
        limit = self.proxy.max_body_bytes
        headers: list[tuple[bytes, bytes]] = []
        has_body = False
        for key, value in scope["headers"]:
            name = key.lower()
            if name in _HOP_BY_HOP or name in _FLEET_ONLY:
                continue
            if name == b"origin" and upstream.origin is not None:
                value = upstream.origin.encode()
            if name == b"content-length":
                has_body = value != b"0"
                if not value.isdigit():
                    await _page(send, 400, "Bad request", "Invalid Content-Length header.")
                    return
                if int(value) > limit:
                    await _too_large(send, limit)
                    return
            headers.append((name, value))
        if _header(scope, b"transfer-encoding"):
            has_body = True
        if upstream.host is not None:
            headers.append((b"host", upstream.host.encode()))
        headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in upstream.extra)
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = f"{upstream.base}{path.decode('latin-1')}"
        if query:
            url += "?" + query.decode("latin-1")

        async def body() -> AsyncIterator[bytes]:
            received = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise _BodyTooLarge
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        client = upstream.client
        request = client.build_request(
            scope["method"], url, headers=headers, content=body() if has_body else None
        )
        try:
            response = await client.send(request, stream=True)
        except _BodyTooLarge:
            await _too_large(send, limit)
            return
        except httpx.HTTPError as exc:
            log.info("preview_upstream_failed", upstream=upstream.label, error=type(exc).__name__)
            upstream.forget()
            await _page(
                send,
                502,
                "The app is not answering",
                "Its sandbox is running, but the app inside did not answer: it may still be "
                "starting, or it stopped with an error. Try again in a moment.",
            )
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError:
            # The upstream broke mid-body; the response has started, so just end it.
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _websocket(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: _Upstream,
        touch: Callable[[], None],
    ) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.lower() in _WS_FORWARDED
        ]
        origin = _header(scope, b"origin")
        if origin:
            headers.append(("Origin", upstream.origin or origin))
        headers.extend(upstream.extra)
        path = scope.get("raw_path") or scope["path"].encode()
        uri = "ws" + upstream.base.removeprefix("http") + path.decode("latin-1")
        query = scope.get("query_string", b"")
        if query:
            uri += "?" + query.decode("latin-1")
        subprotocols = [Subprotocol(p) for p in scope.get("subprotocols", [])]
        try:
            connection = await upstream.connect_ws(uri, headers, subprotocols)
        except (OSError, TimeoutError, Exception) as exc:
            log.info(
                "preview_ws_upstream_failed", upstream=upstream.label, error=type(exc).__name__
            )
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "subprotocol": connection.subprotocol})
        async with connection:
            await _relay(connection, receive, send, touch)


async def _relay(
    upstream: ClientConnection, receive: Receive, send: Send, touch: Callable[[], None]
) -> None:
    """Pump frames both ways until either side closes."""

    async def from_client() -> None:
        while True:
            message: Message = await receive()
            touch()
            if message["type"] == "websocket.receive":
                data = message.get("bytes")
                await upstream.send(data if data is not None else message.get("text") or "")
            elif message["type"] == "websocket.disconnect":
                return

    async def from_upstream() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in upstream:
                touch()
                if isinstance(data, bytes):
                    await send({"type": "websocket.send", "bytes": data})
                else:
                    await send({"type": "websocket.send", "text": data})
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": code})

    tasks = [asyncio.create_task(from_client()), asyncio.create_task(from_upstream())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
