"""(d) per template, cold vs warm; edits; memory per warm sandbox; pool refill rate; (e) 20
concurrent interpreter requests.

Every figure runs from the request (`execute`) to "the new content is shown":
- interpreter: the run's result (its stdout holds the new marker);
- Streamlit and Gradio: the app rendered in Chromium — Debian's /usr/bin/chromium through
  Playwright (bench/browser.py), reaching the sandbox's unix socket through a small local TCP
  forwarder rather than the app's preview proxy (the bench runs the sandbox service without the
  web app; the forwarder passes bytes through unchanged). A blank page of a fresh browser
  context (empty cache, as a new sandbox's new origin is for a user) is opened before the clock
  starts, as the UI's preview frame exists before the fragment arrives; the figure ends when the
  page's rendered text holds the marker (checked every animation frame);
- Next.js and Nuxt: the page served over the sandbox's socket contains the marker (polled every
  50 ms).

Cold: no pool, a new sandbox per request. Warm: a sandbox taken from a pool of one slot; the pool
is full before each measured request and its refill, as in the product, starts once the result
is served (FRAGMENTS_SANDBOX_POOL_REFILL_DELAY_SECONDS later for web apps), so it does not compete
with the measured request. Edit: the same conversation rewrites its app while its page is open
(Streamlit reruns it on save, Gradio's reload mode swaps it in and the page reloads itself, the
Node dev servers hot-reload it). Prepared (web templates): what the UI does while the model is
still writing — `prepare` takes the conversation's sandbox (from the pool) and the page opens on
its placeholder (rendered in Chromium, or served) before the clock starts; the pool has refilled
too, as it would during the seconds of writing; then the fragment's run until the new content is
rendered in that open page (Streamlit reruns the open session, Gradio's page reloads itself) or
served (Next.js, Nuxt). The refill rate is the pool's own start-to-ready time per slot,
one at a time, as slots per minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.browser import Browser, UnixForwarder, open_app, shows
from bench.sse_client import percentile
from fragments.config import Settings
from fragments.sandbox.local.build_cli import build_templates_cli
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.templates import TEMPLATES
from fragments.schemas import Fragment, InterpreterResult, WebResult

INTERPRETER = "code-interpreter-v1"
STREAMLIT = "streamlit-developer"
GRADIO = "gradio-developer"
NEXT = "nextjs-developer"
NUXT = "vue-developer"
IN_BROWSER = (STREAMLIT, GRADIO)
_DCL = "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
_TIMEOUT = 180.0
# What the Streamlit and Gradio placeholders render (local/web.py, local/web_boot.py).
_PLACEHOLDER_TEXT = "Waiting for the app"


def _settings(tmp: str, pool: dict[str, int]) -> Settings:
    return Settings(data_dir=Path(tmp), sandbox_pool_sizes=pool)


async def _page_served(sandbox: WebSandbox, marker: str) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(sandbox.socket))
    async with httpx.AsyncClient(transport=transport, timeout=_TIMEOUT) as client:
        while True:
            page = await client.get(f"http://127.0.0.1:{sandbox.port}/")
            if marker in page.text:
                return
            await asyncio.sleep(0.05)


def _code(template: str, marker: str) -> str:
    if template == STREAMLIT:
        return f"import streamlit as st\nst.title('{marker}')\n"
    if template == GRADIO:
        return (
            "import gradio as gr\n"
            "demo = gr.Interface(fn=lambda s: s, inputs='text', outputs='text',"
            f" title='{marker}')\n"
        )
    if template == NEXT:
        return f"export default function Home() {{\n  return <main>{marker}</main>;\n}}\n"
    if template == NUXT:
        return f"<template>\n  <div>{marker}</div>\n</template>\n"
    return f"print('{marker}')"


class Conversation:
    """One owner's requests for one template, timed to "the new content is shown"."""

    def __init__(self, svc: LocalSandboxService, template: str, owner: str, page: Any) -> None:
        self.svc = svc
        self.template = template
        self.owner = owner
        self.page = page  # a blank browser page for Streamlit and Gradio, else None
        self.sandbox_id: str | None = None
        self._forward: UnixForwarder | None = None
        # Chromium's own timing of the first page view: navigation start -> DOMContentLoaded.
        self.page_load: float | None = None

    async def request(self) -> float:
        """Send a new version of the app; seconds until it is shown."""
        marker = f"m{secrets.token_hex(4)}"
        fragment = Fragment(template=self.template, code=_code(self.template, marker))
        start = time.perf_counter()
        async with asyncio.timeout(_TIMEOUT):
            result = await self.svc.execute(fragment, owner=self.owner)
            if isinstance(result, InterpreterResult):
                if result.error is not None or marker not in "".join(result.stdout):
                    raise RuntimeError(f"the bench cell failed: {result}")
                self.sandbox_id = result.sandbox_id
            else:
                await self._shown(result, marker)
        return time.perf_counter() - start

    async def prepare(self) -> float:
        """Prepare the sandbox and open its placeholder page, as the UI does while the model
        writes; seconds until the placeholder is shown (served, for Next.js and Nuxt)."""
        start = time.perf_counter()
        async with asyncio.timeout(_TIMEOUT):
            prepared = await self.svc.prepare(TEMPLATES[self.template], self.owner)
            sandbox = self.svc.sandbox_for(self.owner)
            if prepared is None or not isinstance(sandbox, WebSandbox):
                raise RuntimeError(f"the bench could not prepare {self.template}")
            self.sandbox_id = prepared.sandbox_id
            if self.page is None:
                await _page_served(sandbox, "")
            else:
                self._forward = UnixForwarder(sandbox.socket)
                await self._forward.__aenter__()
                await open_app(self.page, self._forward.port)
                await shows(self.page, _PLACEHOLDER_TEXT)
        return time.perf_counter() - start

    async def _shown(self, result: WebResult, marker: str) -> None:
        sandbox = self.svc.sandbox_for(self.owner)
        if result.error is not None or not isinstance(sandbox, WebSandbox):
            raise RuntimeError(f"the bench app failed: {result}")
        self.sandbox_id = result.sandbox_id
        if self.page is None:
            await _page_served(sandbox, marker)
            return
        if self._forward is None:  # the first version: the page opens the app
            self._forward = UnixForwarder(sandbox.socket)
            await self._forward.__aenter__()
            await open_app(self.page, self._forward.port)
            await shows(self.page, marker)
            self.page_load = await self.page.evaluate(_DCL) / 1000
            return
        await shows(self.page, marker)  # later versions: the open page updates itself

    async def close(self) -> None:
        if self._forward is not None:
            await self._forward.__aexit__(None, None, None)
        if self.sandbox_id is not None:
            await self.svc.kill(self.sandbox_id)


@contextlib.asynccontextmanager
async def _conversation(
    svc: LocalSandboxService, browser: Browser | None, template: str, owner: str
) -> AsyncIterator[Conversation]:
    async with contextlib.AsyncExitStack() as stack:
        page = None
        if template in IN_BROWSER:
            assert browser is not None
            page = await stack.enter_async_context(browser.page())
        conversation = Conversation(svc, template, owner, page)
        try:
            yield conversation
        finally:
            await conversation.close()


def _ms(values: list[float], p: int) -> float:
    return percentile(values, p) * 1000


def _row(name: str, cold: list[float], warm: list[float], edit: list[float]) -> str:
    ratio = statistics.median(cold) / statistics.median(warm)
    line = (
        f"  {name:<20} cold p50 {_ms(cold, 50):6.0f} p95 {_ms(cold, 95):6.0f} | "
        f"warm p50 {_ms(warm, 50):5.0f} p95 {_ms(warm, 95):5.0f} | {ratio:5.1f}x"
    )
    if edit:
        line += f" | edit p50 {_ms(edit, 50):5.0f} p95 {_ms(edit, 95):5.0f}"
    return line + " (ms)"


def _rss_of_uid(uid: int) -> int:
    total = 0
    for proc in psutil.process_iter(["uids", "memory_info"]):
        uids = proc.info["uids"]
        if uids is not None and uids.real == uid and proc.info["memory_info"] is not None:
            total += proc.info["memory_info"].rss
    return total


async def _cold(
    templates: list[str], runs: int, tmp: str, browser: Browser | None
) -> dict[str, list[float]]:
    svc = LocalSandboxService(_settings(tmp, {}))
    cold: dict[str, list[float]] = {t: [] for t in templates}
    try:
        await svc.check()
        for template in templates:
            for i in range(runs):
                async with _conversation(svc, browser, template, f"cold-{i}") as talk:
                    cold[template].append(await talk.request())
            print(
                f"  {template:<20} cold p50 {_ms(cold[template], 50):6.0f} ms "
                f"p95 {_ms(cold[template], 95):6.0f} ms",
                flush=True,
            )
    finally:
        await svc.aclose()
    return cold


async def _per_template(templates: list[str], runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with contextlib.AsyncExitStack() as stack:
            browser = None
            if any(t in IN_BROWSER for t in templates):
                browser = await stack.enter_async_context(Browser())
            cold = await _cold(templates, runs, tmp, browser)
            warm_svc = LocalSandboxService(_settings(tmp, dict.fromkeys(templates, 1)))
            try:
                await warm_svc.check()
                warm: dict[str, list[float]] = {t: [] for t in templates}
                edit: dict[str, list[float]] = {t: [] for t in templates}
                loads: dict[str, list[float]] = {t: [] for t in templates}
                memory: dict[str, int] = {}
                for template in templates:
                    for i in range(runs):
                        async with asyncio.timeout(300):
                            await warm_svc.pool.wait_full()
                        await asyncio.sleep(0.5)  # let the slot's last log lines settle
                        if i == 0:
                            pooled = warm_svc.pool.waiting(template)[0]
                            memory[template] = _rss_of_uid(pooled.uid)
                        async with _conversation(warm_svc, browser, template, f"w{i}") as talk:
                            warm[template].append(await talk.request())
                            if talk.page_load is not None:
                                loads[template].append(talk.page_load)
                            if template != INTERPRETER:
                                await asyncio.sleep(0.5)
                                edit[template].append(await talk.request())
                    print(_row(template, cold[template], warm[template], edit[template]))
                    if loads[template]:
                        print(
                            f"  {'':<20} warm: of which Chromium loading the page (navigation"
                            f" -> DOMContentLoaded) p50 {_ms(loads[template], 50):5.0f} ms"
                        )
                    if template != INTERPRETER:
                        ahead, ran = await _prepared(warm_svc, browser, template, runs)
                        print(
                            f"  {'':<20} prepared: run -> shown in the open page p50 "
                            f"{_ms(ran, 50):5.0f} p95 {_ms(ran, 95):5.0f} ms (prepare + page "
                            f"open while the model writes: p50 {_ms(ahead, 50):5.0f} ms)"
                        )
                print("  memory per warm sandbox (RSS of its processes, before it is taken):")
                for template, rss in memory.items():
                    print(f"    {template:<20} {rss / 2**20:6.0f} MiB")
                print("  pool refill (a slot started to ready, in the background, one at a time):")
                for template in templates:
                    fills = [s for t, s in warm_svc.pool.fills if t == template]
                    if fills:
                        mean = statistics.mean(fills)
                        print(
                            f"    {template:<20} {mean:6.1f} s per slot = "
                            f"{60 / mean:5.1f} slots/min (n={len(fills)})"
                        )
            finally:
                await warm_svc.aclose()


async def _prepared(
    svc: LocalSandboxService, browser: Browser | None, template: str, runs: int
) -> tuple[list[float], list[float]]:
    """(prepare + page open, then run -> shown) per conversation; see the module docstring."""
    ahead: list[float] = []
    ran: list[float] = []
    for i in range(runs):
        async with asyncio.timeout(300):
            await svc.pool.wait_full()
        await asyncio.sleep(0.5)
        async with _conversation(svc, browser, template, f"p{i}") as talk:
            ahead.append(await talk.prepare())
            # The model is still writing: the slot taken is replaced meanwhile.
            await asyncio.sleep(svc.settings.sandbox_pool_refill_delay_seconds)
            async with asyncio.timeout(300):
                await svc.pool.wait_full()
            await asyncio.sleep(0.5)
            ran.append(await talk.request())
    return ahead, ran


async def _concurrent(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        svc = LocalSandboxService(_settings(tmp, {}))
        try:
            await svc.check()

            async def timed(owner: str) -> float:
                fragment = Fragment(template=INTERPRETER, code="print(sum(range(1000)))")
                start = time.perf_counter()
                result = await svc.execute(fragment, owner=owner)
                if not isinstance(result, InterpreterResult) or result.error is not None:
                    raise RuntimeError(f"a concurrent run failed: {result}")
                return time.perf_counter() - start

            async def wave() -> tuple[list[float], float]:
                start = time.perf_counter()
                times = await asyncio.gather(*(timed(f"c{i}") for i in range(n)))
                return list(times), time.perf_counter() - start

            for label, (times, wall) in (("new sandboxes", await wave()), ("warm", await wave())):
                print(
                    f"  {n} at once, {label:<13}: p50 {_ms(times, 50):7.0f} ms "
                    f"p95 {_ms(times, 95):7.0f} ms, all done in {wall:5.2f} s"
                )
        finally:
            await svc.aclose()


def run(templates: list[str] | None = None, runs: int = 10) -> None:
    """Print (d): per template cold vs warm and edits, memory, refill rate; (e) 20 at once."""
    templates = templates or [INTERPRETER, STREAMLIT, GRADIO, NEXT, NUXT]
    if any(t in IN_BROWSER for t in templates) and not Browser.available():
        raise SystemExit("the template bench needs Debian's chromium (make install installs it)")
    for template in templates:
        build_templates_cli(Settings(), template)
    print(
        f"\n(d) templates: request -> new content shown (Streamlit, Gradio: rendered in "
        f"Chromium; Next.js, Nuxt: page served; interpreter: result), cold (new sandbox) vs "
        f"warm (from a 1-slot pool) vs edit (same conversation, page open), n={runs} each"
    )
    asyncio.run(_per_template(templates, runs))
    print("\n(e) 20 concurrent interpreter requests (20 owners, print cell)")
    asyncio.run(_concurrent(20))
