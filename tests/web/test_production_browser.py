"""Production settings in a real browser (guests off, strict checks): nobody is let in without
an account, and everything works once they have one — sign up from the first message, chat,
reload, sign out, sign in again."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import FakeOpenAI, FragmentReply
from tests.web.app_process import serve_app
from tests.web.test_accounts import FRAGMENT as GREETING
from tests.web.test_browser import browser, fake_openai, provider_env  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

# The accounts test's greeting, printing its own words.
FRAGMENT: dict[str, Any] = {**GREETING, "code": "print('hello from production')\n"}


@pytest.fixture(scope="module")
def production_url(
    fake_openai: FakeOpenAI,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    with serve_app(
        tmp_path_factory.mktemp("prod-data"),
        **provider_env(fake_openai),
        FRAGMENTS_ENV="production",
        FRAGMENTS_SECRET_KEY=secrets.token_urlsafe(32),
    ) as url:
        yield url


def test_guests_off_sign_up_chat_reload_sign_out_sign_in(
    browser: Any,  # noqa: F811
    production_url: str,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    assert httpx.get(f"{production_url}/api/auth/options").json()["guests"] is False
    fake_openai.reset()
    fake_openai.script(FragmentReply(FRAGMENT), FragmentReply(FRAGMENT))
    model = next(
        m for m in httpx.get(f"{production_url}/api/models").json() if m["providerId"] == "openai"
    )
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    email = f"prod-{secrets.token_hex(4)}@example.com"
    password = "a long enough password"
    try:
        page.goto(production_url)
        # No guest session here: the header offers the way in, and no guest label.
        expect(page.get_by_test_id("sign-in")).to_be_visible(timeout=15_000)
        expect(page.get_by_test_id("sign-up")).to_be_visible()
        expect(page.get_by_test_id("account-guest")).to_have_count(0)
        page.wait_for_selector('[data-testid="model-select"] option', state="attached")
        page.select_option('[data-testid="model-select"]', f"openai:{model['id']}")

        # A message from nobody opens the sign-in dialog and stays in the box; no error banner.
        prompt = page.get_by_test_id("chat-input")
        prompt.fill("Say hello in production")
        prompt.press("Enter")
        expect(page.get_by_test_id("auth-dialog")).to_be_visible(timeout=10_000)
        expect(prompt).to_have_value("Say hello in production")
        expect(page.get_by_test_id("message-user")).to_have_count(0)
        expect(page.get_by_test_id("error-banner")).to_have_count(0)
        assert fake_openai.requests == []

        # Sign up from there: the held message goes out and is answered.
        page.get_by_test_id("auth-switch").click()
        page.get_by_test_id("auth-email").fill(email)
        page.get_by_test_id("auth-password").fill(password)
        page.get_by_test_id("auth-submit").click()
        expect(page.get_by_test_id("account-email")).to_have_text(email, timeout=15_000)
        expect(page.get_by_test_id("message-user")).to_have_text(
            "Say hello in production", timeout=15_000
        )
        expect(page.get_by_test_id("stdout")).to_contain_text(
            "hello from production", timeout=90_000
        )
        expect(page.get_by_test_id("history-item")).to_have_count(1)

        # A reload keeps the account and the conversation.
        page.reload()
        expect(page.get_by_test_id("account-email")).to_have_text(email, timeout=15_000)
        expect(page.get_by_test_id("message-user")).to_have_text(
            "Say hello in production", timeout=15_000
        )
        expect(page.get_by_test_id("history-item")).to_have_count(1)

        # Signing out leaves nobody (no guest appears), and nothing of the account shows.
        page.get_by_test_id("sign-out").click()
        expect(page.get_by_test_id("sign-in")).to_be_visible(timeout=15_000)
        expect(page.get_by_test_id("account-guest")).to_have_count(0)
        expect(page.get_by_test_id("history-item")).to_have_count(0)
        expect(page.get_by_test_id("message-user")).to_have_count(0)

        # Signing in again brings the conversation back.
        page.get_by_test_id("sign-in").click()
        page.get_by_test_id("auth-email").fill(email)
        page.get_by_test_id("auth-password").fill(password)
        page.get_by_test_id("auth-submit").click()
        expect(page.get_by_test_id("account-email")).to_have_text(email, timeout=15_000)
        expect(page.get_by_test_id("history-item")).to_have_count(1)
        page.get_by_test_id("history-item").locator("button.history-open").click()
        expect(page.get_by_test_id("message-user")).to_have_text(
            "Say hello in production", timeout=15_000
        )
        expect(page.get_by_test_id("stdout")).to_contain_text(
            "hello from production", timeout=90_000
        )
        assert len(fake_openai.requests) == 1
        assert problems == []
    finally:
        context.close()
