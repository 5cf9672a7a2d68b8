"""The hot path's HTTP/1.1 client against real servers: framing, keep-alive, failures."""

from __future__ import annotations

import asyncio
import gzip
import socket
from typing import Any

import pytest

from fragments.llm.h1 import H1Transport, HTTPError, StreamResponse
from tests.fakes import ServerThread

pytestmark = pytest.mark.anyio


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/chunked streams three pieces, /length sends a sized body, /gzip compresses, /close
    has neither length nor chunking (ends with the connection), /echo returns the request."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/gzip":
        data = gzip.compress(b"squeezed " * 100)
        headers = [(b"content-encoding", b"gzip"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})
    elif path == "/echo":
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    else:
        data = b"sized body"
        headers = [(b"content-length", str(len(data)).encode()), (b"x-thing", b"Yes")]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": data})


@pytest.fixture(scope="module")
def server() -> Any:
    with ServerThread(app) as running:
        yield running


async def pieces_of(response: StreamResponse) -> list[bytes]:
    pieces: list[bytes] = []
    await response.pipe(pieces.append)
    return pieces


async def collect(response: StreamResponse) -> bytes:
    return b"".join(await pieces_of(response))


async def test_chunked_streaming_and_keep_alive(server: ServerThread) -> None:
    transport = H1Transport()
    try:
        for i in range(3):
            async with transport.stream(f"{server.url}/chunked", {}, b"{}") as response:
                assert response.status == 200
                pieces = await pieces_of(response)
            assert b"".join(pieces) == b"one two three"
            if i == 0:
                # Streamed as it came, not buffered. (Only checked on a fresh connection: a
                # server thread in this process answers kept-alive connections ~40 ms late, in
                # one piece; a server in another process does not.)
                assert len(pieces) >= 2
        # The three requests shared one connection.
        assert sum(len(idle) for idle in transport._idle.values()) == 1
    finally:
        await transport.aclose()


async def test_status_headers_and_sized_body(server: ServerThread) -> None:
    transport = H1Transport()
    async with transport.stream(f"{server.url}/missing", {}, b"") as response:
        assert response.status == 404
        assert response.headers["x-thing"] == "Yes"
        assert await response.read() == b"sized body"
    await transport.aclose()


async def test_request_headers_and_body(server: ServerThread) -> None:
    transport = H1Transport()
    headers = {"Authorization": "Bearer k", "Content-Length": "999", "Accept-Encoding": "br"}
    async with transport.stream(f"{server.url}/echo?x=1", headers, b'{"hello": 1}') as response:
        assert response.status == 201
        assert await collect(response) == b'{"hello": 1}'
    await transport.aclose()


async def test_gzip_body(server: ServerThread) -> None:
    transport = H1Transport()
    async with transport.stream(f"{server.url}/gzip", {}, b"") as response:
        assert await collect(response) == b"squeezed " * 100
    await transport.aclose()


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = H1Transport()
    with pytest.raises(HTTPError, match="cannot connect"):
        async with transport.stream(f"http://127.0.0.1:{port}/x", {}, b""):
            pass


async def test_unsupported_url() -> None:
    with pytest.raises(HTTPError, match="unsupported"):
        async with H1Transport().stream("ftp://example.com/x", {}, b""):
            pass


async def _raw_server(handler: Any) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_body_cut_short_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a bit")
        await writer.drain()
        writer.close()

    server, port = await _raw_server(handler)
    async with server:
        transport = H1Transport()
        with pytest.raises(HTTPError, match="middle of the body"):
            async with transport.stream(f"http://127.0.0.1:{port}/", {}, b"") as response:
                await collect(response)


async def test_body_delimited_by_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\ndata: 1\n\n")
        await writer.drain()
        writer.close()

    server, port = await _raw_server(handler)
    async with server:
        transport = H1Transport()
        async with transport.stream(f"http://127.0.0.1:{port}/", {}, b"") as response:
            assert await collect(response) == b"data: 1\n\n"
        assert not any(transport._idle.values())


async def test_a_stale_kept_alive_connection_is_replaced() -> None:
    """The server keeps the first connection alive, then closes it while idle."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # without saying Connection: close

    server, port = await _raw_server(handler)
    async with server:
        transport = H1Transport()
        for _ in range(3):
            async with transport.stream(f"http://127.0.0.1:{port}/", {}, b"") as response:
                assert await collect(response) == b"ok"
            await asyncio.sleep(0.05)
        assert connections == 3
        await transport.aclose()


async def test_garbage_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        writer.close()

    server, port = await _raw_server(handler)
    async with server:
        with pytest.raises(HTTPError):
            async with H1Transport().stream(f"http://127.0.0.1:{port}/", {}, b""):
                pass


async def test_an_error_from_the_sink_ends_the_response(server: ServerThread) -> None:
    transport = H1Transport()

    def sink(chunk: bytes) -> None:
        raise ValueError("not what I expected")

    with pytest.raises(ValueError, match="not what I expected"):
        async with transport.stream(f"{server.url}/chunked", {}, b"") as response:
            await response.pipe(sink)
    assert not any(transport._idle.values())  # a half-read connection is not reused


def test_under_uvloop(server: ServerThread) -> None:
    """uvicorn serves the app on uvloop, whose transports are not asyncio's classes."""
    import uvloop

    async def go() -> bytes:
        transport = H1Transport()
        try:
            async with transport.stream(f"{server.url}/chunked", {}, b"") as response:
                return await collect(response)
        finally:
            await transport.aclose()

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(go()) == b"one two three"
    finally:
        loop.close()
