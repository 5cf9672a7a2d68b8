"""Run any ASGI app with uvicorn on 127.0.0.1 in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import uvicorn


class ServerThread:
    """`with ServerThread(app) as server: server.url` — a real HTTP server on a free port.
    Pass `lifespan="on"` to run the app's lifespan (the Fragments app needs it).

    The server owns its loop, so it serves sync tests, async tests (whose loop it never blocks)
    and processes that only know its URL. `on_stop` runs in the server's loop before shutdown,
    so streams that wait forever can be released.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_stop: Callable[[], None] | None = None,
        lifespan: Literal["on", "off"] = "off",
    ) -> None:
        self.app = app
        self._lifespan = lifespan
        self.host = host
        self.port = port
        self._on_stop = on_stop
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "server not started"
        return self._loop

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan=self._lifespan,
            interface="asgi3",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            # Connections to a fake are many and short in benches; keep them cheap.
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"server-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 10 s")
            time.sleep(0.005)

    def _run(self, sock: socket.socket) -> None:
        # The loop uvicorn picks by default (uvloop when installed), as in production.
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            assert self._server is not None
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to start() / stop()
            self._error = exc
        finally:
            # Tasks the app left behind (e.g. sse-starlette's shutdown watcher) end here, not
            # as "Task was destroyed but it is pending" at exit.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def drop_connection(self, client: tuple[Any, ...], *, reset: bool) -> None:
        """Close the connection from `client` (host, port) mid-response, from the server's own
        loop: a FIN once the bytes already sent are flushed, or with `reset` a TCP RST."""
        assert self._server is not None
        for conn in list(self._server.server_state.connections):
            transport = conn.transport
            if tuple(transport.get_extra_info("peername") or ())[:2] != client[:2]:
                continue
            if not reset:
                transport.close()
                return
            # A reset discards what is not yet delivered: wait until the transport's buffer and
            # the kernel's send queue (which a slow reader's full window holds up) are empty,
            # so the client gets every byte sent and then the RST. Neither signals an event.
            sock = transport.get_extra_info("socket")
            while transport.get_write_buffer_size() or _unsent(sock.fileno()):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return
        raise AssertionError(f"no connection from {client}")

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        if self._on_stop is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_stop)
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _unsent(fd: int) -> int:
    """Bytes in a TCP socket's send queue not yet acknowledged by the peer (Linux SIOCOUTQ)."""
    out: int = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    return out
