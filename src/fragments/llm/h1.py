"""HTTP for the streaming hot path: a small HTTP/1.1 client on an asyncio Protocol + httptools.

Measured on the project's 2-vCPU machines, receiving one ~3 KB answer in 134 SSE chunks costs
~24 ms of CPU through httpx2 (h11, httpcore, anyio and several task wake-ups per chunk); the
budget for a whole answer, SSE out included, is 30 ms. Here the body is handed to a callback
straight from `data_received`: per chunk, httptools' C parser and the caller's sink run inside
the event loop's read callback, with no future, task switch or generator resumption at all.

The SDKs (through pydantic-ai's providers) still decide each request's URL and headers. When the
environment configures a proxy, requests go through httpx2 instead, which knows how to use one.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools
import httpx2

from fragments.observability import tracing

_MAX_ERROR_BODY = 65536
Origin = tuple[str, str, int]
Sink = Callable[[bytes], None]


class HTTPError(Exception):
    """The connection failed or the server broke the protocol (not an HTTP error status)."""


class StreamResponse(Protocol):
    status: int
    # Header names lower-case.
    headers: dict[str, str]

    async def pipe(self, sink: Sink) -> None:
        """Hand every body chunk to `sink` as it arrives; return once the body is complete.
        An exception from `sink` ends the response and is raised here."""

    async def read(self, limit: int = _MAX_ERROR_BODY) -> bytes:
        """The body (for error responses), at most `limit` bytes."""


class Transport(Protocol):
    def stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """POST `body` to `url`; yields once the response head arrived."""

    async def aclose(self) -> None: ...


class _Exchange:
    """One request/response on a connection: httptools callbacks and the caller's futures."""

    __slots__ = (
        "buffer",
        "complete",
        "decode",
        "done",
        "error",
        "framed",
        "head",
        "headers",
        "parser",
        "sink",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.head: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.sink: Sink | None = None
        self.buffer: list[bytes] = []
        self.decode: Callable[[bytes], bytes] | None = None
        self.error: BaseException | None = None
        self.complete = False
        self.framed = True

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        h = self.headers
        self.framed = "content-length" in h or "chunked" in h.get("transfer-encoding", "").lower()
        self.decode = _decoder(h.get("content-encoding", ""))
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.decode is not None:
            body = self.decode(body)
        sink = self.sink
        if sink is None:
            self.buffer.append(body)
        else:
            sink(body)

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        for future in (self.head, self.done):
            if not future.done():
                future.set_exception(error)
                # Retrieved here so an unawaited failure is not reported as lost.
                future.exception()


class _Conn(asyncio.Protocol):
    __slots__ = ("closed", "exchange", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.error is not None:
            self.close()  # nothing is expected on an idle connection
            return
        try:
            exchange.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # The caller's sink (or the decompressor) raised: that error ends the response.
            cause = exc.__context__ or exc
            exchange.fail(cause)
            self.close()
        except httptools.HttpParserError as exc:
            exchange.fail(HTTPError(f"malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        exchange = self.exchange
        if exchange is not None and not exchange.complete:
            if exchange.head.done() and not exchange.framed:
                exchange.on_message_complete()  # a body that ends with the connection
            else:
                exchange.fail(_closed(exchange))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        if exchange is not None and not exchange.complete:
            error = _closed(exchange)
            if exc is not None:
                error.__cause__ = exc
            exchange.fail(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _closed(exchange: _Exchange) -> HTTPError:
    if exchange.head.done():
        return HTTPError("the server closed the connection in the middle of the body")
    return _StaleOrClosed("the server closed the connection without answering")


class _StaleOrClosed(HTTPError):
    """Closed before any response: on a kept-alive connection, retried on a new one."""


class _Response:
    __slots__ = ("_conn", "_exchange", "headers", "status")

    def __init__(self, conn: _Conn, exchange: _Exchange) -> None:
        self._conn = conn
        self._exchange = exchange
        self.status = exchange.parser.get_status_code()
        self.headers = exchange.headers

    async def pipe(self, sink: Sink) -> None:
        exchange = self._exchange
        if exchange.buffer:
            for chunk in exchange.buffer:
                sink(chunk)
            exchange.buffer.clear()
        exchange.sink = sink
        if exchange.complete:
            return
        await exchange.done

    async def read(self, limit: int = _MAX_ERROR_BODY) -> bytes:
        out = bytearray()

        def keep(chunk: bytes) -> None:
            if len(out) < limit:
                out.extend(chunk[: limit - len(out)])

        await self.pipe(keep)
        return bytes(out)


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()


class H1Transport:
    """HTTP/1.1 with keep-alive pooling per origin."""

    def __init__(self, *, max_idle_per_origin: int = 256) -> None:
        self._idle: dict[Origin, list[_Conn]] = {}
        self._max_idle = max_idle_per_origin
        self._ssl: ssl.SSLContext | None = None

    async def _connect(self, origin: Origin) -> _Conn:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        try:
            if scheme == "https":
                if self._ssl is None:
                    self._ssl = _ssl_context()
                _, conn = await loop.create_connection(
                    _Conn, host, port, ssl=self._ssl, server_hostname=host
                )
            else:
                _, conn = await loop.create_connection(_Conn, host, port)
        except OSError as exc:
            raise HTTPError(f"cannot connect to {host}:{port} ({exc})") from exc
        return conn

    def _take(self, origin: Origin) -> _Conn | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def _put(self, origin: Origin, conn: _Conn) -> None:
        conn.exchange = None
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_idle and not conn.closed:
            idle.append(conn)
        else:
            conn.close()

    def stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """POST `body` to `url`; yields once the response head arrived."""
        if tracing.enabled():
            return self._traced(url, headers, body)
        return self._stream(url, headers, body)

    @asynccontextmanager
    async def _traced(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[StreamResponse]:
        # No instrumentation knows this client: a client span by hand, open until the body ends.
        with tracing.client_span("POST", url) as span:
            async with self._stream(url, headers, body) as response:
                tracing.response_status(span, response.status)
                yield response

    @asynccontextmanager
    async def _stream(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[StreamResponse]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise HTTPError(f"unsupported URL {url[:100]!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        origin: Origin = (scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]  # never send URL credentials as the Host
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}"]
        for name, value in headers.items():
            if name.lower() not in ("host", "content-length", "accept-encoding", "connection"):
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(body)}")
        # Compressed SSE saves little and costs a decompressor per chunk.
        lines.append("Accept-Encoding: identity")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        loop = asyncio.get_running_loop()

        conn: _Conn | None = None
        exchange: _Exchange | None = None
        for attempt in range(2):
            conn = self._take(origin) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin)
            exchange = _Exchange(loop)
            conn.exchange = exchange
            try:
                assert conn.transport is not None
                conn.transport.write(request)
                await exchange.head
            except _StaleOrClosed:
                conn.close()
                if reused:
                    continue  # a kept-alive connection the server had closed: use a new one
                raise
            except BaseException:
                conn.close()
                raise
            break
        assert conn is not None
        assert exchange is not None

        # llhttp forgets keep-alive once the message is complete, so decide from the head.
        connection = exchange.headers.get("connection", "").lower()
        if exchange.parser.get_http_version() == "1.0":
            reusable = "keep-alive" in connection
        else:
            reusable = "close" not in connection
        try:
            yield _Response(conn, exchange)
        finally:
            if reusable and exchange.complete and exchange.error is None and not conn.closed:
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


class _Httpx2Response:
    def __init__(self, response: httpx2.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = {k.lower(): v for k, v in response.headers.items()}

    async def pipe(self, sink: Sink) -> None:
        try:
            async for chunk in self._response.aiter_bytes():
                sink(chunk)
        except httpx2.TransportError as exc:
            raise HTTPError(str(exc) or type(exc).__name__) from exc

    async def read(self, limit: int = _MAX_ERROR_BODY) -> bytes:
        out = bytearray()
        try:
            async for chunk in self._response.aiter_bytes():
                out += chunk
                if len(out) >= limit:
                    break
        except httpx2.TransportError as exc:
            raise HTTPError(str(exc) or type(exc).__name__) from exc
        return bytes(out[:limit])


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
            yield _Httpx2Response(response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        pass  # the client belongs to the streamer


def proxies_configured() -> bool:
    """Whether the environment asks for an HTTP(S) proxy (HTTPS_PROXY, ALL_PROXY, ...)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(k) for k in ("http", "https", "all"))
