"""A local HTTP endpoint that records what it receives: the test's own stand-in for an OTLP
collector, a Sentry server or PostHog's ingestion API.

    with Collector() as collector:
        collector.url                      # http://127.0.0.1:PORT
        ...                                # point the app at it
        collector.wait_for(lambda r: r.path == "/v1/traces")
        collector.received                 # [Received(method, path, headers, body)]

Bodies are stored decompressed (gzip and deflate, as the clients send them). `hold()` makes
every request wait, unanswered, until `release()`: a client that must never block on it can be
shown not to.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes import ServerThread


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Collector:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.waiting = 0
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        from starlette.applications import Starlette

        app = Starlette(routes=[Route("/{path:path}", self._record, methods=["POST", "PUT"])])
        self._server = ServerThread(app)

    async def _record(self, request: Request) -> JSONResponse:
        body = await request.body()
        encoding = request.headers.get("content-encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        with self._lock:
            self.received.append(
                Received(request.method, request.url.path, dict(request.headers), body)
            )
            self.waiting += 1
        try:
            await anyio.to_thread.run_sync(self._open.wait)
        finally:
            with self._lock:
                self.waiting -= 1
        return JSONResponse({"status": 1})

    @property
    def url(self) -> str:
        return self._server.url

    def hold(self) -> None:
        """Leave every request unanswered until `release`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_for(
        self, matches: Callable[[Received], bool], timeout: float = 15.0
    ) -> list[Received]:
        """The requests received so far that match, once there is one (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [r for r in self.received if matches(r)]
            if found:
                return found
            if time.monotonic() > deadline:
                paths = [r.path for r in self.received]
                raise AssertionError(f"nothing matching arrived in {timeout} s (got {paths})")
            time.sleep(0.05)

    def __enter__(self) -> Collector:
        self._server.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        self._server.__exit__(exc_type, exc, tb)
