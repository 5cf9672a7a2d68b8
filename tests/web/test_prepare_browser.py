"""The preview starts while the model is still writing: a slowly streamed Streamlit (or Gradio)
answer makes the page ask for the conversation's sandbox (`POST /api/sandbox/prepare`) during
the stream, the placeholder page loads hidden in the preview iframe, and when the fragment has
run the same frame element, its address unchanged, shows the final app: Streamlit reran the
open session (the frame never navigated again); Gradio's own page may reload itself inside it.

Same set-up as test_browser.py: the app as its own process, a fake OpenAI at the wire, Debian's
Chromium through Playwright."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest

from tests.fakes import FakeOpenAI, FragmentReply
from tests.web.test_browser import (  # noqa: F401
    FRAGMENT,
    PROBE,
    app_url,
    browser,
    fake_openai,
)

pytestmark = pytest.mark.browser

# Streamed slowly enough (about 8 s) that the sandbox is ready and its page loaded before the
# fragment is complete, even when no warm Streamlit slot is ready.
TIMELINE = """
window.__timeline = [];
const realFetch = window.fetch;
window.fetch = (input, init) => {
  const path = new URL(String(input?.url || input), location.href).pathname;
  if (path === "/api/sandbox/prepare") window.__timeline.push(["prepare", performance.now()]);
  if (path === "/api/sandbox") window.__timeline.push(["run", performance.now()]);
  return realFetch(input, init);
};
// The page turns to the Preview tab when the complete fragment arrives.
new MutationObserver(() => {
  const tab = document.querySelector('[data-testid="tab-preview"][aria-selected="true"]');
  if (tab && !window.__timeline.some(([name]) => name === "complete")) {
    window.__timeline.push(["complete", performance.now()]);
  }
}).observe(document, { subtree: true, attributes: true, childList: true });
"""
PADDING = "".join(f"# line {i} of a long comment the model writes first\n" for i in range(40))


GRADIO_CODE = """import gradio as gr

with gr.Blocks() as demo:
    gr.Markdown("# {marker}")
    name = gr.Textbox(label="Name")

demo.launch(server_name="0.0.0.0", server_port=7860)
"""


def _prepared_preview(
    chromium: Any,
    base_url: str,
    provider: FakeOpenAI,
    *,
    template: str,
    port: int,
    code: str,
    marker: str,
) -> list[str]:
    """Ask for an app of `template`, check it was prepared during the stream and shown in the
    frame element that loaded early, with the same address; the frame's navigations."""
    from playwright.sync_api import expect

    fragment = {
        **FRAGMENT,
        "commentary": f"A {template} app, previewed early.",
        "template": template,
        "title": "Early preview",
        "port": port,
        "file_path": "app.py",
        "code": f"{PADDING}{code}",
    }
    provider.reset()
    provider.script(FragmentReply(fragment, chunk_size=24, delay=0.08))
    openai_model = next(
        m for m in httpx.get(f"{base_url}/api/models").json() if m["providerId"] == "openai"
    )
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(PROBE)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # What the page asked, in order, and when the fragment was complete.
    context.add_init_script(TIMELINE)
    # Every navigation of the preview's frame (its first load included).
    frame_loads: list[str] = []
    page.on(
        "framenavigated",
        lambda f: (
            frame_loads.append(f.url) if f != page.main_frame and f"{port}-" in f.url else None
        ),
    )
    try:
        page.goto(base_url)
        page.wait_for_selector('[data-testid="model-select"] option', state="attached")
        page.select_option('[data-testid="model-select"]', f"openai:{openai_model['id']}")
        prompt = page.get_by_test_id("chat-input")
        prompt.fill(f"A {template} app, please")
        prompt.press("Enter")

        # The page loads, unseen, before the fragment has run (before it is even complete).
        loading = page.locator('[data-testid="preview-iframe"][data-state="loading"]')
        expect(loading).to_have_count(1, timeout=60_000)
        assert "run" not in [name for name, _ in page.evaluate("window.__timeline")]
        # Tag the element: the one finally shown must be this one, not a new frame.
        loading.evaluate("el => { el.__early = true; }")
        src = loading.get_attribute("src")
        assert src

        shown = page.locator('[data-testid="preview-iframe"][data-state="shown"]')
        expect(shown).to_have_count(1, timeout=60_000)
        inner = page.frame_locator('[data-testid="preview-iframe"]')
        expect(inner.get_by_text(marker)).to_be_visible(timeout=60_000)
        assert shown.evaluate("el => el.__early === true")
        assert shown.get_attribute("src") == src
        # Prepared during the stream, run after it.
        seen = page.evaluate("window.__timeline")
        names = [name for name, _ in seen]
        assert names.count("prepare") == 1, seen
        assert names.index("prepare") < names.index("complete") < names.index("run"), seen
        time.sleep(0.5)  # a late navigation, if any, would be counted now
        assert frame_loads, frame_loads
        assert frame_loads[0] == src, frame_loads
        assert page.evaluate("window.__csp") == []
        assert errors == []
        return frame_loads
    finally:
        context.close()


def test_the_preview_loads_during_the_stream_and_is_revealed_without_navigating(
    browser: Any,  # noqa: F811
    app_url: str,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    marker = f"Prepared app {secrets.token_hex(3)}"
    frame_loads = _prepared_preview(
        browser,
        app_url,
        fake_openai,
        template="streamlit-developer",
        port=8501,
        code=f"import streamlit as st\nst.title('{marker}')\n",
        marker=marker,
    )
    # Streamlit reran the open session: the frame navigated exactly once.
    assert len(frame_loads) == 1, frame_loads


def test_a_prepared_gradio_preview_shows_the_app_in_the_same_frame(
    browser: Any,  # noqa: F811
    app_url: str,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    marker = f"Prepared Gradio {secrets.token_hex(3)}"
    frame_loads = _prepared_preview(
        browser,
        app_url,
        fake_openai,
        template="gradio-developer",
        port=7860,
        code=GRADIO_CODE.replace("{marker}", marker),
        marker=marker,
    )
    # Gradio may reload its own page inside the frame, never anywhere but the prepared app.
    assert all(url.startswith(frame_loads[0]) for url in frame_loads), frame_loads
