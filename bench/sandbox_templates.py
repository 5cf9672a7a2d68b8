"""(d) per template, cold vs warm; memory per warm sandbox; 20 concurrent interpreter requests;
pool refill rate.

Cold: no pool, a new sandbox per request. Warm: a sandbox taken from a warm pool of one slot,
refilled (and waited for) between requests. Each figure is request -> "the new content is
served": the interpreter's result; for Streamlit, a session opened on the sandbox's socket
renders the new app's marker (the browser's own WebSocket protocol, without the browser); for
Gradio, Next.js and Nuxt, the page served contains the new app's marker.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import unix_connect

from bench.sse_client import percentile
from fragments.config import Settings
from fragments.sandbox.local.build import build_templates_cli
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.local.web import WebSandbox
from fragments.schemas import Fragment, InterpreterResult, WebResult

INTERPRETER = "code-interpreter-v1"
STREAMLIT = "streamlit-developer"
GRADIO = "gradio-developer"
NEXT = "nextjs-developer"
NUXT = "vue-developer"
# A Streamlit BackMsg asking for a script run (`rerun_script` with an empty ClientState).
_RERUN = b"Z\x00"


def _settings(tmp: str, pool: dict[str, int]) -> Settings:
    return Settings(data_dir=Path(tmp), sandbox_pool_sizes=pool)


async def _streamlit_rendered(sandbox: WebSandbox, marker: str) -> None:
    async with unix_connect(
        str(sandbox.socket),
        f"ws://127.0.0.1:{sandbox.port}/_stcore/stream",
        subprotocols=["streamlit"],  # type: ignore[list-item]
    ) as ws:
        await ws.send(_RERUN)
        async with asyncio.timeout(30):
            while True:
                message = await ws.recv()
                if isinstance(message, bytes) and marker.encode() in message:
                    return


async def _page_served(sandbox: WebSandbox, marker: str) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(sandbox.socket))
    async with httpx.AsyncClient(transport=transport, timeout=120) as client:
        async with asyncio.timeout(120):
            while True:
                page = await client.get(f"http://127.0.0.1:{sandbox.port}/")
                if marker in page.text:
                    return
                await asyncio.sleep(0.02)


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


async def _one(svc: LocalSandboxService, template: str, owner: str) -> float:
    marker = f"m{secrets.token_hex(4)}"
    fragment = Fragment(template=template, code=_code(template, marker))
    start = time.perf_counter()
    result = await svc.execute(fragment, owner=owner)
    if isinstance(result, InterpreterResult):
        if result.error is not None or marker not in "".join(result.stdout):
            raise RuntimeError(f"the bench cell failed: {result}")
    else:
        assert isinstance(result, WebResult)
        sandbox = svc.sandbox_for(owner)
        if result.error is not None or not isinstance(sandbox, WebSandbox):
            raise RuntimeError(f"the bench app failed: {result}")
        check = _streamlit_rendered if template == STREAMLIT else _page_served
        await check(sandbox, marker)
    elapsed = time.perf_counter() - start
    await svc.kill(result.sandbox_id or "")
    return elapsed


def _row(name: str, cold: list[float], warm: list[float]) -> str:
    c50, c95 = percentile(cold, 50) * 1000, percentile(cold, 95) * 1000
    w50, w95 = percentile(warm, 50) * 1000, percentile(warm, 95) * 1000
    ratio = statistics.median(cold) / statistics.median(warm)
    return (
        f"  {name:<20} cold p50 {c50:7.0f} ms p95 {c95:7.0f} ms | "
        f"warm p50 {w50:6.0f} ms p95 {w95:6.0f} ms | {ratio:5.1f}x"
    )


def _rss_of_uid(uid: int) -> int:
    total = 0
    for proc in psutil.process_iter(["uids", "memory_info"]):
        uids = proc.info["uids"]
        if uids is not None and uids.real == uid and proc.info["memory_info"] is not None:
            total += proc.info["memory_info"].rss
    return total


async def _per_template(templates: list[str], runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cold_svc = LocalSandboxService(_settings(tmp, {}))
        try:
            await cold_svc.check()
            cold: dict[str, list[float]] = {}
            for template in templates:
                cold[template] = [await _one(cold_svc, template, f"c{i}") for i in range(runs)]
                c50, c95 = percentile(cold[template], 50), percentile(cold[template], 95)
                print(f"  {template:<20} cold p50 {c50 * 1000:7.0f} ms p95 {c95 * 1000:7.0f} ms")
        finally:
            await cold_svc.aclose()
        warm_svc = LocalSandboxService(_settings(tmp, dict.fromkeys(templates, 1)))
        try:
            await warm_svc.check()
            warm: dict[str, list[float]] = {t: [] for t in templates}
            memory: dict[str, int] = {}
            for template in templates:
                for i in range(runs):
                    async with asyncio.timeout(300):
                        await warm_svc.pool.wait_full()
                    if i == 0:
                        pooled = warm_svc.pool.waiting(template)[0]
                        memory[template] = _rss_of_uid(pooled.uid)
                    warm[template].append(await _one(warm_svc, template, f"warm-{i}"))
            for template in templates:
                print(_row(template, cold[template], warm[template]))
            print("  memory per warm sandbox (RSS of its processes):")
            for template, rss in memory.items():
                print(f"    {template:<20} {rss / 2**20:6.0f} MiB")
            print("  pool refill (start a sandbox for the pool, background):")
            for template in templates:
                fills = [s for t, s in warm_svc.pool.fills if t == template]
                if fills:
                    mean = statistics.mean(fills)
                    print(
                        f"    {template:<20} {mean * 1000:6.0f} ms per slot "
                        f"({1 / mean:4.2f} slots/s, n={len(fills)})"
                    )
        finally:
            await warm_svc.aclose()


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
                    f"  {n} at once, {label:<13}: p50 {percentile(times, 50) * 1000:7.0f} ms "
                    f"p95 {percentile(times, 95) * 1000:7.0f} ms, all done in {wall:5.2f} s"
                )
        finally:
            await svc.aclose()


def run(templates: list[str] | None = None, runs: int = 10) -> None:
    """Print (d): per-template cold vs warm, memory, refill rate, 20 concurrent runs."""
    templates = templates or [INTERPRETER, STREAMLIT, GRADIO, NEXT, NUXT]
    for template in templates:
        build_templates_cli(Settings(), template)
    print(
        f"\n(d) templates: request -> new content served, cold (new sandbox, no pool) vs warm "
        f"(taken from a 1-slot pool), n={runs} each"
    )
    asyncio.run(_per_template(templates, runs))
    print("\n(e) 20 concurrent interpreter requests (20 owners, print cell)")
    asyncio.run(_concurrent(20))
