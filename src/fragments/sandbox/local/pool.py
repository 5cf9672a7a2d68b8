"""Warm pools: per template, a few started sandboxes that no one owns yet.

A filler task per template keeps `size` sandboxes ready (an interpreter with numpy, pandas and
matplotlib imported; Streamlit and Gradio serving a placeholder; a Node dev server with its
placeholder page compiled). `take` is synchronous and called under the service's acquire lock,
so a ready sandbox leaves the pool exactly once: it is never handed to two owners. Pooled
sandboxes are not listed as live (no preview reaches them, the reaper skips them) until taken.

A refill is not started the moment a sandbox is taken: starting a sandbox is CPU-bound (an
import of numpy or gradio, a Next.js compile) and would compete with the request that took it,
each sandbox being capped at one CPU on a machine of a few. The service calls `refill` once the
request's result is served (with a delay for web apps, whose page then loads in the browser);
a refill owed is started anyway after `_REFILL_AT_THE_LATEST` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import structlog

from fragments.sandbox.local.build import TemplateEnv

log = structlog.get_logger(__name__)

_RETRY_AFTER_FAILURE = 5.0
_REFILL_AT_THE_LATEST = 30.0


def _now() -> float:
    return asyncio.get_running_loop().time()


class Pooled(Protocol):
    """What the pool needs of a sandbox."""

    id: str
    last_used: float
    env: TemplateEnv

    @property
    def alive(self) -> bool: ...


S = TypeVar("S", bound=Pooled)


class WarmPool(Generic[S]):
    """Ready sandboxes per template id (see the module docstring)."""

    def __init__(
        self,
        sizes: dict[str, int],
        make: Callable[[str], Coroutine[None, None, S | None]],
        close: Callable[[S], Coroutine[None, None, None]],
    ) -> None:
        self.sizes = {t: n for t, n in sizes.items() if n > 0}
        self._make = make
        self._close = close
        self._ready: dict[str, list[S]] = {t: [] for t in self.sizes}
        self._wanted: dict[str, asyncio.Event] = {t: asyncio.Event() for t in self.sizes}
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._filled = asyncio.Event()
        # (template, seconds) of every fill, for the bench's refill rate.
        self.fills: list[tuple[str, float]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._fill(t)) for t in self.sizes]

    def ready(self, template_id: str) -> int:
        return len(self._ready.get(template_id, []))

    def waiting(self, template_id: str) -> list[S]:
        """The ready sandboxes of a template (a copy; for the bench's memory figures)."""
        return list(self._ready.get(template_id, []))

    def take(self, template_id: str, env_path: Path) -> S | None:
        """A ready sandbox of this template and environment, now the caller's; or None."""
        ready = self._ready.get(template_id)
        if not ready:
            return None
        self.refill(template_id, _REFILL_AT_THE_LATEST)  # unless `refill` comes sooner
        while ready:
            sandbox = ready.pop(0)
            if sandbox.alive and sandbox.env.path == env_path:
                sandbox.last_used = time.monotonic()
                return sandbox
            task = asyncio.create_task(self._close(sandbox))
            self._tasks.append(task)
        return None

    def refill(self, template_id: str, delay: float = 0.0) -> None:
        """Let the template's filler top its pool up, now or in `delay` seconds."""
        wanted = self._wanted.get(template_id)
        if wanted is None:
            return
        if delay <= 0:
            wanted.set()
            return
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > _now()]
        self._timers.append(asyncio.get_running_loop().call_later(delay, wanted.set))

    async def _fill(self, template_id: str) -> None:
        ready = self._ready[template_id]
        wanted = self._wanted[template_id]
        while True:
            while len(ready) < self.sizes[template_id]:
                started = time.monotonic()
                try:
                    sandbox = await self._make(template_id)
                except Exception:
                    log.exception("sandbox_pool_fill_failed", template=template_id)
                    sandbox = None
                if sandbox is None:
                    await asyncio.sleep(_RETRY_AFTER_FAILURE)
                    continue
                ready.append(sandbox)
                self._filled.set()
                seconds = time.monotonic() - started
                self.fills.append((template_id, seconds))
                log.info("sandbox_pool_filled", template=template_id, seconds=round(seconds, 3))
            wanted.clear()
            await wanted.wait()

    def full(self) -> bool:
        return all(len(self._ready[t]) >= n for t, n in self.sizes.items())

    async def wait_full(self) -> None:
        """Wait until every pool is full (tests, bench; bound it with asyncio.timeout)."""
        while not self.full():
            self._filled.clear()
            await self._filled.wait()

    async def aclose(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        sandboxes = [s for ready in self._ready.values() for s in ready]
        for ready in self._ready.values():
            ready.clear()
        await asyncio.gather(*(self._close(s) for s in sandboxes), return_exceptions=True)
