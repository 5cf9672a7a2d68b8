"""HTTP for the streaming hot path: a small HTTP/1.1 client on asyncio streams and httptools.

Measured on the project's 2-vCPU machines, receiving one ~3 KB answer in 134 SSE chunks costs
~24 ms of CPU through httpx2 (h11, httpcore, anyio per chunk) and ~5 ms through asyncio streams
with httptools' C parser. The budget for a whole answer is 30 ms, so provider streams are read
here. The SDKs (through pydantic-ai's providers) still decide the URL and headers of each
request. When a proxy is configured in the environment, requests go through httpx2 instead,
which knows how to use one.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httptools
import httpx2

_READ = 65536
_MAX_ERROR_BODY = 65536
Origin = tuple[str, str, int]


class HTTPError(Exception):
    """The connection failed or the server broke the protocol (not an HTTP error status)."""


@dataclass(slots=True)
class StreamResponse:
    status: int
    # Header names lower-case.
    headers: dict[str, str]
    body: AsyncIterator[bytes]

    async def read(self, limit: int = _MAX_ERROR_BODY) -> bytes:
        """The body (for error responses), at most `limit` bytes."""
        out = bytearray()
        async for chunk in self.body:
            out += chunk
            if len(out) >= limit:
                break
        return bytes(out[:limit])


class Transport(Protocol):
    def stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """POST `body` to `url`; yields once the response headers arrived."""

    async def aclose(self) -> None: ...


class _State:
    """httptools callbacks for one response."""

    __slots__ = ("chunks", "complete", "headers", "headers_done")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.chunks: list[bytes] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()


class H1Transport:
    """HTTP/1.1 with keep-alive pooling per origin; bodies streamed as read from the socket."""

    def __init__(self, *, max_idle_per_origin: int = 256) -> None:
        self._idle: dict[Origin, list[_Conn]] = {}
        self._max_idle = max_idle_per_origin
        self._ssl: ssl.SSLContext | None = None

    async def _connect(self, origin: Origin) -> _Conn:
        scheme, host, port = origin
        if scheme == "https":
            if self._ssl is None:
                self._ssl = _ssl_context()
            reader, writer = await asyncio.open_connection(
                host, port, ssl=self._ssl, server_hostname=host, limit=_READ
            )
        else:
            reader, writer = await asyncio.open_connection(host, port, limit=_READ)
        return _Conn(reader, writer)

    def _take(self, origin: Origin) -> _Conn | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def _put(self, origin: Origin, conn: _Conn) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_idle and conn.usable():
            idle.append(conn)
        else:
            conn.close()

    @asynccontextmanager
    async def stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[StreamResponse]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise HTTPError(f"unsupported URL {url[:100]!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        origin: Origin = (scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}"]
        for name, value in headers.items():
            low = name.lower()
            if low not in ("host", "content-length", "accept-encoding", "connection"):
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(body)}")
        # Compressed SSE saves little and costs a decompressor per chunk.
        lines.append("Accept-Encoding: identity")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

        host = parts.hostname
        for attempt in range(2):
            conn = self._take(origin) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                try:
                    conn = await self._connect(origin)
                except OSError as exc:
                    raise HTTPError(f"cannot connect to {host}:{port} ({exc})") from exc
            state = _State()
            parser = httptools.HttpResponseParser(state)
            try:
                conn.writer.write(request)
                await conn.writer.drain()
                while not state.headers_done:
                    data = await conn.reader.read(_READ)
                    if not data:
                        raise ConnectionResetError("the server closed the connection")
                    parser.feed_data(data)
            except (OSError, httptools.HttpParserError) as exc:
                conn.close()
                if reused and isinstance(exc, ConnectionError):
                    # A kept-alive connection the server had already closed: use a new one.
                    continue
                raise HTTPError(str(exc) or type(exc).__name__) from exc
            except BaseException:
                conn.close()
                raise
            break
        else:  # pragma: no cover - the second attempt either breaks or raises
            raise HTTPError("no connection")

        # llhttp forgets keep-alive once the message is complete, so decide from the head.
        connection = state.headers.get("connection", "").lower()
        if parser.get_http_version() == "1.0":
            reusable = "keep-alive" in connection
        else:
            reusable = "close" not in connection
        framed = (
            "content-length" in state.headers
            or "chunked" in state.headers.get("transfer-encoding", "").lower()
        )
        decoder = _decoder(state.headers.get("content-encoding", ""))
        done = [False]
        response = StreamResponse(
            status=parser.get_status_code(),
            headers=state.headers,
            body=_body(conn, state, parser, framed, decoder, done),
        )
        keep = False
        try:
            yield response
            keep = reusable and done[0] and state.complete
        finally:
            if keep:
                self._put(origin, conn)
            else:
                conn.close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _decoder(encoding: str) -> Callable[[bytes], bytes] | None:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if encoding == "deflate":
        return zlib.decompressobj().decompress
    return None


async def _body(
    conn: _Conn,
    state: _State,
    parser: httptools.HttpResponseParser,
    framed: bool,
    decode: Callable[[bytes], bytes] | None,
    done: list[bool],
) -> AsyncIterator[bytes]:
    chunks = state.chunks
    read = conn.reader.read
    feed = parser.feed_data
    while True:
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            yield decode(data) if decode is not None else data
        if state.complete:
            break
        data = await read(_READ)
        if not data:
            if framed:
                raise HTTPError("the server closed the connection in the middle of the body")
            state.complete = True
            continue
        try:
            feed(data)
        except httptools.HttpParserError as exc:
            raise HTTPError(f"malformed HTTP response: {exc}") from exc
    done[0] = True


class Httpx2Transport:
    """The same interface over httpx2, for environments that need a proxy."""

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self._client = client

    @asynccontextmanager
    async def stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[StreamResponse]:
        request = self._client.build_request("POST", url, headers=dict(headers), content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.TransportError as exc:
            raise HTTPError(str(exc) or type(exc).__name__) from exc
        try:
            headers_out = {k.lower(): v for k, v in response.headers.items()}
            yield StreamResponse(response.status_code, headers_out, _httpx2_body(response))
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


async def _httpx2_body(response: httpx2.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx2.TransportError as exc:
        raise HTTPError(str(exc) or type(exc).__name__) from exc


def proxies_configured() -> bool:
    """Whether the environment asks for an HTTP(S) proxy (HTTPS_PROXY, ALL_PROXY, ...)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(k) for k in ("http", "https", "all"))
