"""The UI during a failover, in a real browser against the real app: the primary (a fake OpenAI
server) breaks off mid-answer, the secondary (a fake Anthropic server) answers. The partial answer
from the primary disappears, the final fragment is the secondary's, and a banner says why."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes import FakeAnthropic, FakeOpenAI, FragmentReply
from tests.web.app_process import serve_app
from tests.web.test_browser import GUEST_LIMITS_OFF, browser, open_app, send_prompt

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the module-scoped fixture, shared with test_browser

PRIMARY: dict[str, Any] = {
    "commentary": "PRIMARY-PARTIAL: this answer from the first model will be cut off. " * 3,
    "template": "code-interpreter-v1",
    "title": "From the primary",
    "description": "Never finished.",
    "file_path": "script.py",
    "code": "print('primary')\n" * 20,
}
SECONDARY: dict[str, Any] = {
    "commentary": "SECONDARY-ANSWER: the second model wrote this.",
    "template": "code-interpreter-v1",
    "title": "From the secondary",
    "description": "The answer that arrived.",
    "file_path": "script.py",
    "code": "print('secondary answer')\n",
}

# Records whether the primary's partial answer was ever on the page.
PROBE = """
window.__sawPrimary = false;
new MutationObserver(() => {
  if (document.body && document.body.textContent.includes("PRIMARY-PARTIAL")) {
    window.__sawPrimary = true;
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, FakeAnthropic]]:
    with FakeOpenAI() as primary, FakeAnthropic() as secondary:
        yield primary, secondary  # type: ignore[misc]


@pytest.fixture(scope="module")
def app_url(
    fakes: tuple[FakeOpenAI, FakeAnthropic], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    primary, secondary = fakes
    with serve_app(
        tmp_path_factory.mktemp("data"),
        OPENAI_BASE_URL=primary.base_url,
        OPENAI_API_KEY="test-key",
        ANTHROPIC_BASE_URL=secondary.base_url,
        ANTHROPIC_API_KEY="test-key",
        FRAGMENTS_FAILOVER_CHAIN="openai:gpt-4.1,anthropic:claude-sonnet-5-5",
        **GUEST_LIMITS_OFF,
    ) as url:
        yield url


def test_a_fallback_mid_answer_drops_the_partial_and_shows_the_banner(
    browser: Any, app_url: str, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    from playwright.sync_api import expect

    primary, secondary = fakes
    # About 1.5 s of the primary's answer on screen, then its connection drops.
    primary.script(FragmentReply(PRIMARY, chunk_size=12, delay=0.05, drop_after=30))
    secondary.script(FragmentReply(SECONDARY, chunk_size=12, delay=0.02))

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(PROBE)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        open_app(page, app_url, "gpt-4.1")
        send_prompt(page, "Print something")

        banner = page.get_by_test_id("fallback-banner")
        expect(banner).to_be_visible(timeout=20_000)
        expect(banner).to_contain_text("Answered by Claude Sonnet 5.5 because GPT-4.1")
        expect(banner).to_contain_text("dropped the connection")

        assistant = page.get_by_test_id("message-assistant").last
        expect(assistant).to_have_attribute("data-state", "done", timeout=20_000)
        expect(page.get_by_test_id("commentary").last).to_contain_text("SECONDARY-ANSWER")
        expect(page.get_by_test_id("fragment-card").last).to_contain_text("From the secondary")
        # The fragment that ran is the secondary's: its output is in the preview.
        expect(page.get_by_role("tabpanel")).to_contain_text("secondary answer", timeout=30_000)
        # The primary's partial answer was shown, then dropped entirely.
        assert page.evaluate("window.__sawPrimary") is True
        assert "PRIMARY-PARTIAL" not in page.locator("body").inner_text()
        assert "From the primary" not in page.locator("body").inner_text()
        assert errors == []
    finally:
        context.close()
