"""The UI in a real browser against the real app: a chat turn streams from a fake OpenAI server,
the code grows live in the code panel, and the local sandbox's output (stdout and a matplotlib
chart) shows in the preview, with no CSP violation or console error on the way.

Runs Debian's Chromium through Playwright (never a downloaded browser). The app runs as its own
process (`python -m fragments.cli serve`), so the page talks to exactly what `make run` serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import ErrorReply, FakeOpenAI, FragmentReply
from tests.web.app_process import CHROMIUM, serve_app

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

CODE = """import matplotlib.pyplot as plt
import numpy as np

x = np.linspace(0, 4 * np.pi, 300)
print("browser-test points:", len(x))

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(x, np.sin(x), label="sin(x)")
ax.plot(x, np.cos(x), label="cos(x)")
ax.set_title("Sine and cosine")
ax.legend(loc="upper right")
plt.show()
"""
FRAGMENT: dict[str, Any] = {
    "commentary": "I will plot **a sine and a cosine** with matplotlib and print the point count.",
    "template": "code-interpreter-v1",
    "title": "Sine and cosine",
    "description": "Two periods of sin and cos on one chart.",
    "additional_dependencies": [],
    "has_additional_dependencies": False,
    "install_dependencies_command": "",
    "port": None,
    "file_path": "script.py",
    "code": CODE,
}

# Recorded in the page from the first script on: CSP violations, and every change of the code
# panel's text length together with its streaming state. (Init scripts are injected by the
# browser, not by the page, so they do not need a CSP exception.)
PROBE = """
window.__csp = [];
window.__code = [];
window.__phases = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
});
new MutationObserver(() => {
  const code = document.querySelector('[data-testid="code-view"]');
  if (code) {
    const sample = { len: code.textContent.length, state: code.dataset.state };
    const last = window.__code[window.__code.length - 1];
    if (!last || last.len !== sample.len || last.state !== sample.state) window.__code.push(sample);
  }
  const phase = document.querySelector('[data-testid="sandbox-phase"]');
  if (phase) {
    const value = phase.dataset.phase || "(preparing)";
    if (window.__phases[window.__phases.length - 1] !== value) window.__phases.push(value);
  }
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""


def openai_model_id(app_url: str) -> str:
    """The catalogue's first OpenAI model (the fake provider speaks OpenAI's protocol)."""
    models = httpx.get(f"{app_url}/api/models").json()
    return str(next(m for m in models if m["providerId"] == "openai")["id"])


def probed_page(browser: Any, errors: list[str]) -> tuple[Any, Any]:
    """A new context and page with PROBE installed; page errors are appended to `errors`."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(PROBE)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page


def open_app(page: Any, app_url: str, model_id: str) -> None:
    """Load the app and choose the OpenAI model the fake answers for."""
    page.goto(app_url)
    page.wait_for_selector('[data-testid="model-select"] option', state="attached")
    page.select_option('[data-testid="model-select"]', f"openai:{model_id}")


def send_prompt(page: Any, text: str) -> None:
    prompt = page.get_by_test_id("chat-input")
    prompt.fill(text)
    prompt.press("Enter")


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def app_url(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app in its own process (development defaults), talking to the fake provider."""
    with serve_app(
        tmp_path_factory.mktemp("data"), **provider_env(fake_openai), **GUEST_LIMITS_OFF
    ) as url:
        yield url


def provider_env(fake_openai: FakeOpenAI) -> dict[str, str]:
    """The app's platform OpenAI key and base URL: the fake provider."""
    return {"OPENAI_BASE_URL": fake_openai.base_url, "OPENAI_API_KEY": "test-key"}


# Every page here is a guest from 127.0.0.1, and guests share their IP's limits.
GUEST_LIMITS_OFF = {
    "FRAGMENTS_GUEST_TOKENS_PER_DAY": "100000",
    "FRAGMENTS_RATE_LIMIT_GUEST_PER_DAY": "100000",
    "FRAGMENTS_SANDBOX_LIMIT_GUEST_PER_DAY": "100000",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium package is not installed; make install installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_chat_streams_code_and_shows_the_chart(
    browser: Any, app_url: str, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    fake_openai.reset()
    # ~60 provider chunks 40 ms apart: about 2.5 s of visible streaming.
    fake_openai.script(FragmentReply(FRAGMENT, chunk_size=16, delay=0.04))
    openai_model = next(
        m for m in httpx.get(f"{app_url}/api/models").json() if m["providerId"] == "openai"
    )

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(PROBE)
    page = context.new_page()
    problems: list[str] = []

    def on_console(msg: Any) -> None:
        if msg.type in ("error", "warning"):
            problems.append(f"console {msg.type}: {msg.text} ({msg.location})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    try:
        page.goto(app_url)
        page.wait_for_selector('[data-testid="model-select"] option', state="attached")
        page.select_option('[data-testid="model-select"]', f"openai:{openai_model['id']}")
        # The month's usage in the top bar: nothing yet for this new guest.
        month = page.get_by_test_id("month-usage")
        expect(month).to_have_text(re.compile(r"^\s*0 tokens · \$0\.0000"), timeout=15_000)
        prompt = page.get_by_test_id("chat-input")
        prompt.fill("Plot a sine and a cosine wave")
        prompt.press("Enter")

        # The user's message, then the streamed commentary rendered as markdown.
        expect(page.get_by_test_id("message-user")).to_have_text("Plot a sine and a cosine wave")
        commentary = page.get_by_test_id("commentary")
        expect(commentary).to_contain_text("I will plot a sine and a cosine", timeout=15_000)
        expect(commentary.locator("strong")).to_have_text("a sine and a cosine")

        # The code grew in the Code tab while it streamed; the final fragment switches the
        # panel to Preview by itself (the sandbox run starts then).
        expect(page.get_by_test_id("tab-preview")).to_have_attribute(
            "aria-selected", "true", timeout=30_000
        )
        samples = page.evaluate("window.__code")
        streamed = [s["len"] for s in samples if s["state"] == "streaming"]
        partial = [n for n in streamed if 0 < n < len(CODE)]
        assert len(set(partial)) >= 3, f"the code did not visibly grow while streaming: {samples}"
        assert streamed == sorted(streamed), f"the streamed code shrank: {samples}"

        # stdout and the chart arrive from the sandbox.
        expect(page.get_by_test_id("stdout")).to_contain_text(
            "browser-test points: 300", timeout=90_000
        )
        chart = page.locator('[data-testid="result"][data-kind="png"] img')
        expect(chart).to_have_count(1)
        src = chart.get_attribute("src") or ""
        assert src.startswith("data:image/png;base64,"), src[:60]
        width = chart.evaluate("img => img.decode().then(() => img.naturalWidth)")
        assert width > 0
        assert page.evaluate("window.__phases"), "no sandbox progress was shown"
        expect(page.get_by_test_id("exec-error")).to_have_count(0)
        expect(page.get_by_test_id("error-banner")).to_have_count(0)

        # Token usage under the answer, and a card that reopens the fragment.
        expect(page.get_by_test_id("usage")).to_contain_text("in ·")
        # The month's total in the top bar was fetched again after the answer: it grew.
        expect(month).to_have_text(re.compile(r"^\s*[1-9][\d.]*k? tokens · \$"))
        expect(page.get_by_test_id("fragment-card")).to_contain_text("Sine and cosine")
        page.get_by_test_id("tab-code").click()
        expect(page.get_by_test_id("file-name")).to_have_text("script.py")
        code = page.get_by_test_id("code-view")
        expect(code).to_have_attribute("data-state", "final")
        assert code.text_content() == CODE

        # What reached the provider: the chosen model with the platform's key.
        chat_requests = [r for r in fake_openai.requests if r.path.endswith("/chat/completions")]
        assert len(chat_requests) == 1
        assert chat_requests[0].json["model"] == openai_model["id"]
        assert chat_requests[0].authorization == "Bearer test-key"

        assert page.evaluate("window.__csp") == []
        assert problems == []
    finally:
        context.close()


def test_settings_reach_the_provider_and_try_again_recovers(
    browser: Any, app_url: str, fake_openai: FakeOpenAI
) -> None:
    """Sampling settings from the dialog reach the provider; a failed answer shows the server's
    sentence in a banner, and "Try again" re-sends the same message."""
    from playwright.sync_api import expect

    fake_openai.reset()
    quick = {**FRAGMENT, "commentary": "Second time lucky.", "code": 'print("retried")\n'}
    fake_openai.script(ErrorReply(401, "Incorrect API key provided"), FragmentReply(quick))
    openai_model = next(
        m for m in httpx.get(f"{app_url}/api/models").json() if m["providerId"] == "openai"
    )
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(app_url)
        page.wait_for_selector('[data-testid="model-select"] option', state="attached")
        page.select_option('[data-testid="model-select"]', f"openai:{openai_model['id']}")

        page.get_by_test_id("settings-button").click()
        expect(page.get_by_test_id("settings-dialog")).to_be_visible()
        page.get_by_label("Temperature").fill("0.3")
        page.get_by_test_id("settings-done").click()
        expect(page.get_by_test_id("settings-dialog")).to_be_hidden()

        prompt = page.get_by_test_id("chat-input")
        prompt.fill("Print something")
        prompt.press("Enter")
        banner = page.get_by_test_id("error-banner")
        expect(banner).to_contain_text("refused the API key", timeout=15_000)
        expect(page.get_by_test_id("message-assistant")).to_have_count(0)

        page.get_by_test_id("retry-button").click()
        expect(page.get_by_test_id("commentary")).to_have_text("Second time lucky.", timeout=15_000)
        expect(banner).to_have_count(0)
        expect(page.get_by_test_id("message-user")).to_have_count(1)

        chats = [r for r in fake_openai.requests if r.path.endswith("/chat/completions")]
        assert len(chats) == 2
        for request in chats:
            assert request.json["temperature"] == 0.3
            assert "Print something" in str(request.json["messages"])
        assert errors == []
    finally:
        context.close()


def test_sse_parser_splits_and_line_endings(browser: Any, app_url: str) -> None:
    """The page's own SSE parser: events split anywhere across chunks, CRLF/CR/LF line ends,
    multi-line data, comments (pings) and an unterminated last event."""
    page = browser.new_page()
    try:
        page.goto(f"{app_url}/static/vendor/versions.json")
        events = page.evaluate(
            """async () => {
              const { SSEParser } = await import("/static/js/lib/sse.js");
              const out = [];
              const parser = new SSEParser((e) => out.push([e.event, e.data]));
              const stream = ": ping\\r\\nevent: partial\\r\\ndata: {\\"a\\":1}\\r\\n\\r\\n" +
                "event: usage\\rdata: line1\\rdata: line2\\r\\r" +
                "data: plain\\n\\nevent: done\\ndata: {}\\n\\nevent: lost\\ndata: x";
              for (let i = 0; i < stream.length; i += 3) parser.feed(stream.slice(i, i + 3));
              return out;
            }"""
        )
        assert events == [
            ["partial", '{"a":1}'],
            ["usage", "line1\nline2"],
            ["message", "plain"],
            ["done", "{}"],
        ]
    finally:
        page.close()


STREAMLIT_FRAGMENT: dict[str, Any] = {
    **FRAGMENT,
    "commentary": "A tiny Streamlit app.",
    "template": "streamlit-developer",
    "title": "Hello Streamlit",
    "description": "A title and a metric.",
    "port": 8501,
    "file_path": "app.py",
    "code": (
        "import streamlit as st\nst.title('Streamlit in the preview')\nst.metric('answer', 42)\n"
    ),
}


def test_a_streamlit_app_renders_in_the_preview_iframe(
    browser: Any, app_url: str, fake_openai: FakeOpenAI
) -> None:
    """The preview URL (`8501-<id>.localhost:<port>`) is served by the app's proxy, HTTP and
    Streamlit's WebSocket, inside the page's iframe, with no CSP violation on the page."""
    from playwright.sync_api import expect

    fake_openai.reset()
    fake_openai.script(FragmentReply(STREAMLIT_FRAGMENT, chunk_size=64, delay=0.01))
    errors: list[str] = []
    context, page = probed_page(browser, errors)
    try:
        open_app(page, app_url, openai_model_id(app_url))
        send_prompt(page, "A Streamlit app with a metric")

        iframe = page.get_by_test_id("preview-iframe")
        expect(iframe).to_have_count(1, timeout=90_000)
        src = iframe.get_attribute("src") or ""
        port = app_url.rsplit(":", 1)[1]
        assert re.fullmatch(rf"http://8501-[0-9a-f]+\.localhost:{port}/", src), src
        inner = page.frame_locator('[data-testid="preview-iframe"]')
        expect(inner.get_by_text("Streamlit in the preview")).to_be_visible(timeout=60_000)
        expect(inner.get_by_text("42")).to_be_visible()
        assert page.evaluate("window.__csp") == []
        assert errors == []
    finally:
        context.close()
