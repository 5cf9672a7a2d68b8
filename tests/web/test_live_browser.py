"""Sandbox phases over the WebSocket in a real browser: the page follows its run on `/api/ws`,
and a reload in the middle of the run re-attaches to the same job (no second run) and shows its
phase and then its result.

Same set-up as test_browser.py: the app as its own process, a fake OpenAI at the wire, Debian's
Chromium through Playwright."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes import FakeOpenAI, FragmentReply
from tests.web.test_browser import (  # noqa: F401
    FRAGMENT,
    app_url,
    browser,
    fake_openai,
    open_app,
    openai_model_id,
    probed_page,
    send_prompt,
)

pytestmark = pytest.mark.browser

SLOW_CODE = """import time
print("started")
time.sleep(6)
print("survived the reload")
"""


def test_phases_come_over_the_websocket_and_survive_a_reload(
    browser: Any,  # noqa: F811
    app_url: str,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    fake_openai.reset()
    fragment = {**FRAGMENT, "title": "A slow cell", "code": SLOW_CODE}
    fake_openai.script(FragmentReply(fragment, chunk_size=200, delay=0.01))
    errors: list[str] = []
    context, page = probed_page(browser, errors)
    frames: list[dict[str, Any]] = []
    runs: list[str] = []

    def on_socket(ws: Any) -> None:
        if ws.url.endswith("/api/ws"):
            ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_socket)
    page.on(
        "request",
        lambda r: runs.append(r.method) if r.url.endswith("/api/sandbox") else None,
    )
    try:
        open_app(page, app_url, openai_model_id(app_url))
        send_prompt(page, "A slow cell, please")
        running = page.locator('[data-testid="sandbox-phase"][data-phase="running"]')
        expect(running).to_have_count(1, timeout=90_000)
        phases = [f["phase"] for f in frames if f.get("type") == "phase"]
        assert phases[0] == "queued", frames
        assert "running" in phases, frames
        job = json.loads(page.evaluate("sessionStorage.getItem('fragments.sandboxJob')"))
        assert job["jobId"] == frames[-1]["job_id"]
        assert runs == ["POST"]

        page.reload()
        # Re-attached: the phase it had shows at once, then the result of the same job.
        expect(page.get_by_text("survived the reload")).to_be_visible(timeout=90_000)
        assert runs == ["POST"], "the reload ran the fragment again instead of re-attaching"
        [result] = [f for f in frames if f.get("type") == "result"]
        assert result["job_id"] == job["jobId"]
        assert "".join(result["stdout"]) == "started\nsurvived the reload\n"
        assert "running" in page.evaluate("window.__phases")
        assert page.evaluate("sessionStorage.getItem('fragments.sandboxJob')") is None
        assert page.evaluate("window.__csp") == []
        assert errors == []
    finally:
        context.close()


def test_without_the_websocket_the_run_falls_back_to_sse(
    browser: Any,  # noqa: F811
    app_url: str,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    fake_openai.reset()
    fragment = {**FRAGMENT, "title": "No socket", "code": "print('over sse')"}
    fake_openai.script(FragmentReply(fragment, chunk_size=200, delay=0.01))
    errors: list[str] = []
    context, page = probed_page(browser, errors)
    accepts: list[str] = []
    # A proxy that refuses WebSockets: every attempt at /api/ws is closed at once.
    page.route_web_socket("**/api/ws", lambda ws: ws.close())
    page.on(
        "request",
        lambda r: (
            accepts.append(r.headers.get("accept", "")) if r.url.endswith("/api/sandbox") else None
        ),
    )
    try:
        open_app(page, app_url, openai_model_id(app_url))
        send_prompt(page, "A cell without a socket")
        expect(page.get_by_text("over sse")).to_be_visible(timeout=90_000)
        assert accepts == ["text/event-stream"], accepts
        assert page.evaluate("sessionStorage.getItem('fragments.sandboxJob')") is None
        assert errors == []
    finally:
        context.close()
