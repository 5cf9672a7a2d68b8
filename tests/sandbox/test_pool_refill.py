"""The warm pool refills a taken slot when the service says its result is served (or at the
latest after a fallback delay), not while the request that took it is still running."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fragments.sandbox.local import pool as pool_module
from fragments.sandbox.local.build import TemplateEnv
from fragments.sandbox.local.pool import WarmPool
from fragments.sandbox.templates import TEMPLATES

pytestmark = pytest.mark.anyio

TEMPLATE = "code-interpreter-v1"
ENV = TemplateEnv(TEMPLATES[TEMPLATE], Path("/nonexistent/env"))


@dataclass
class FakeSandbox:
    """Stands in for a started sandbox: the pool only reads these fields."""

    id: str
    env: TemplateEnv = ENV
    last_used: float = 0.0
    alive: bool = True


@dataclass
class Maker:
    made: list[FakeSandbox] = field(default_factory=list)
    made_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def make(self, template_id: str) -> FakeSandbox:
        sandbox = FakeSandbox(id=f"s{len(self.made)}")
        self.made.append(sandbox)
        self.made_event.set()
        return sandbox

    async def close(self, sandbox: FakeSandbox) -> None:
        sandbox.alive = False


async def _full_pool(maker: Maker) -> WarmPool[FakeSandbox]:
    pool: WarmPool[FakeSandbox] = WarmPool({TEMPLATE: 1}, maker.make, maker.close)
    pool.start()
    async with asyncio.timeout(5):
        await pool.wait_full()
    return pool


async def test_a_taken_slot_is_refilled_only_when_asked() -> None:
    maker = Maker()
    pool = await _full_pool(maker)
    try:
        taken = pool.take(TEMPLATE, ENV.path)
        assert taken is maker.made[0]
        maker.made_event.clear()
        # The request that took it is still running: no refill competes with it.
        await asyncio.sleep(0.3)
        assert len(maker.made) == 1
        assert pool.ready(TEMPLATE) == 0
        pool.refill(TEMPLATE)  # its result is served
        async with asyncio.timeout(5):
            await pool.wait_full()
        assert len(maker.made) == 2
        assert pool.take(TEMPLATE, ENV.path) is maker.made[1]
    finally:
        await pool.aclose()


async def test_a_delayed_refill_starts_after_its_delay() -> None:
    maker = Maker()
    pool = await _full_pool(maker)
    try:
        pool.take(TEMPLATE, ENV.path)
        pool.refill(TEMPLATE, 0.2)  # a web app: the browser loads the page meanwhile
        assert len(maker.made) == 1
        async with asyncio.timeout(5):
            await pool.wait_full()
        assert len(maker.made) == 2
    finally:
        await pool.aclose()


async def test_a_refill_nobody_asks_for_still_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "_REFILL_AT_THE_LATEST", 0.2)
    maker = Maker()
    pool = await _full_pool(maker)
    try:
        pool.take(TEMPLATE, ENV.path)  # and the request never reports back
        async with asyncio.timeout(5):
            await pool.wait_full()
        assert len(maker.made) == 2
    finally:
        await pool.aclose()
