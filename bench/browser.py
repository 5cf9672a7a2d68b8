"""Chromium for the template bench: "the app rendered in the browser".

The browser is Debian's /usr/bin/chromium driven by Playwright (never a downloaded build), with
the flags tests/web uses. It reaches a web sandbox directly through a small local TCP -> unix
socket forwarder (`UnixForwarder`, one per sandbox, on 127.0.0.1), not through the app's preview
proxy: the bench runs the sandbox service in-process without the web app, and the forwarder
passes bytes through unchanged (HTTP and the WebSocket the page opens alike), so the figure is
the sandbox's and the browser's time, without the proxy's few milliseconds per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


class UnixForwarder:
    """Accept TCP connections on 127.0.0.1:<port> and pipe each one to a unix socket."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> UnixForwarder:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()


class Browser:
    """One Chromium for the whole bench; a fresh context (empty cache) per measured page."""

    def __init__(self) -> None:
        self._playwright: Any = None
        self._browser: Any = None

    @staticmethod
    def available() -> bool:
        return shutil.which("chromium") is not None

    async def __aenter__(self) -> Browser:
        from playwright.async_api import async_playwright

        executable = shutil.which("chromium")
        if executable is None:
            raise RuntimeError("Debian's chromium is not installed (make install installs it)")
        self._playwright = await async_playwright().start()
        self._browser = await self._playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._browser is not None:
            await self._browser.close()
        if self._playwright is not None:
            await self._playwright.stop()

    @contextlib.asynccontextmanager
    async def page(self) -> AsyncIterator[Any]:
        """A blank page in a fresh context, opened before the clock starts (as the UI's
        preview frame exists before the fragment arrives)."""
        context = await self._browser.new_context(viewport={"width": 1200, "height": 800})
        try:
            yield await context.new_page()
        finally:
            await context.close()


async def open_app(page: Any, port: int) -> None:
    """Navigate to the app on 127.0.0.1:`port`; returns once the response has started."""
    await page.goto(f"http://127.0.0.1:{port}/", wait_until="commit")


async def shows(page: Any, marker: str) -> None:
    """Return once the page's rendered text contains `marker` (checked every frame).

    `innerText` is the text as laid out, so hidden elements do not count; polling on
    animation frames keeps the figure exact to a frame, unlike a locator's retry backoff.
    """
    await page.wait_for_function(
        "m => document.body !== null && document.body.innerText.includes(m)",
        arg=marker,
        polling="raf",
        timeout=0,
    )
