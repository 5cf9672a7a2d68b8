"""Accounts in the browser: a guest's work survives a refresh, sign-up keeps it, the history
sidebar reopens a conversation (chat, code and a fresh sandbox run), sharing and signing out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes import FakeOpenAI, FragmentReply
from tests.web.test_browser import app_url, browser, fake_openai  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

FRAGMENT: dict[str, Any] = {
    "commentary": "Printing a greeting.",
    "template": "code-interpreter-v1",
    "title": "Greeting",
    "description": "Prints hello.",
    "additional_dependencies": [],
    "has_additional_dependencies": False,
    "install_dependencies_command": "",
    "port": None,
    "file_path": "script.py",
    "code": "print('hello from history')\n",
}


def test_guest_history_survives_refresh_and_signup(
    browser: Any,  # noqa: F811
    app_url: str,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    fake_openai.reset()
    fake_openai.script(FragmentReply(FRAGMENT))
    model = next(
        m for m in httpx.get(f"{app_url}/api/models").json() if m["providerId"] == "openai"
    )
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    try:
        page.goto(app_url)
        expect(page.get_by_test_id("account-guest")).to_be_visible(timeout=15_000)
        page.wait_for_selector('[data-testid="model-select"] option', state="attached")
        page.select_option('[data-testid="model-select"]', f"openai:{model['id']}")
        prompt = page.get_by_test_id("chat-input")
        prompt.fill("Say hello")
        prompt.press("Enter")
        expect(page.get_by_test_id("stdout")).to_contain_text("hello from history", timeout=90_000)
        expect(page.get_by_test_id("history-item")).to_have_count(1)
        # A guest sees the month's usage, not a team budget.
        expect(page.get_by_test_id("month-usage")).to_be_visible()
        expect(page.get_by_test_id("team-budget")).to_have_count(0)

        # A refresh keeps the guest's conversation: chat, code, and a re-run preview.
        page.reload()
        expect(page.get_by_test_id("account-guest")).to_be_visible(timeout=15_000)
        expect(page.get_by_test_id("message-user")).to_have_text("Say hello", timeout=15_000)
        expect(page.get_by_test_id("stdout")).to_contain_text("hello from history", timeout=90_000)
        expect(page.get_by_test_id("history-item")).to_have_count(1)

        # Sign up: the guest's conversation comes along.
        page.get_by_test_id("sign-up").click()
        page.get_by_test_id("auth-email").fill("browser-user@example.com")
        page.get_by_test_id("auth-password").fill("a long enough password")
        page.get_by_test_id("auth-submit").click()
        expect(page.get_by_test_id("account-email")).to_have_text(
            "browser-user@example.com", timeout=15_000
        )
        expect(page.get_by_test_id("history-item")).to_have_count(1)
        # The owner of their team sees its usage against the free tier's monthly budget.
        expect(page.get_by_test_id("team-budget")).to_contain_text("/ 2.0M", timeout=15_000)
        page.get_by_test_id("share-toggle").check()
        expect(page.get_by_test_id("share-toggle")).to_be_checked()

        # New chat, then reopen from the sidebar.
        page.get_by_test_id("new-chat").click()
        expect(page.get_by_test_id("message-user")).to_have_count(0)
        page.get_by_test_id("history-item").locator("button.history-open").click()
        expect(page.get_by_test_id("message-user")).to_have_text("Say hello", timeout=15_000)
        expect(page.get_by_test_id("stdout")).to_contain_text("hello from history", timeout=90_000)

        # Sign out: a fresh guest with an empty history.
        page.get_by_test_id("sign-out").click()
        expect(page.get_by_test_id("account-guest")).to_be_visible(timeout=15_000)
        expect(page.get_by_test_id("history-item")).to_have_count(0)
        expect(page.get_by_test_id("message-user")).to_have_count(0)
        assert problems == []
    finally:
        context.close()


def test_a_refresh_mid_answer_keeps_the_message(
    browser: Any,  # noqa: F811
    app_url: str,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    fake_openai.reset()
    # A slow answer: the page is refreshed while it streams.
    fake_openai.script(FragmentReply(FRAGMENT, chunk_size=4, delay=0.1), FragmentReply(FRAGMENT))
    model = next(
        m for m in httpx.get(f"{app_url}/api/models").json() if m["providerId"] == "openai"
    )
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(app_url)
        expect(page.get_by_test_id("account-guest")).to_be_visible(timeout=15_000)
        page.wait_for_selector('[data-testid="model-select"] option', state="attached")
        page.select_option('[data-testid="model-select"]', f"openai:{model['id']}")
        prompt = page.get_by_test_id("chat-input")
        prompt.fill("Build me a slow app")
        prompt.press("Enter")
        expect(page.get_by_test_id("commentary")).to_contain_text("Printing", timeout=15_000)
        page.reload()
        # The message in flight is back in the input, ready to send again.
        expect(page.get_by_test_id("chat-input")).to_have_value(
            "Build me a slow app", timeout=15_000
        )
        page.get_by_test_id("chat-input").press("Enter")
        expect(page.get_by_test_id("stdout")).to_contain_text("hello from history", timeout=90_000)
        page.reload()
        expect(page.get_by_test_id("message-user")).to_have_text(
            "Build me a slow app", timeout=15_000
        )
    finally:
        context.close()
