"""Password reset in a real browser: "Forgot password?" in the sign-in dialog, the mail read from
a real SMTP server (aiosmtpd), the link opened, a new password chosen, and the user signed in.

The app runs as its own process (as `make run` serves it) with FRAGMENTS_SMTP_URL pointing at
the test's SMTP server and FRAGMENTS_PUBLIC_URL at itself, so the mailed link opens the app."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.mailbox import Mailbox, serving_mailbox
from tests.web.app_process import free_port, serve_app
from tests.web.test_browser import browser

__all__ = ["browser"]  # fixtures

pytestmark = pytest.mark.browser

NO_POOLS = '{"code-interpreter-v1": 0, "streamlit-developer": 0, "gradio-developer": 0}'


@pytest.fixture(scope="module")
def smtp() -> Iterator[Mailbox]:
    with serving_mailbox() as box:
        yield box


def _serving(smtp: Mailbox, data: Path, **settings: str) -> AbstractContextManager[str]:
    """The real app in its own process, mailing through the test's SMTP server."""
    port = free_port()
    return serve_app(
        data,
        port=port,
        FRAGMENTS_SMTP_URL=smtp.url,
        FRAGMENTS_PUBLIC_URL=f"http://127.0.0.1:{port}",
        FRAGMENTS_SANDBOX_POOL_SIZES=NO_POOLS,
        **settings,
    )


@pytest.fixture
def mail_app(smtp: Mailbox, tmp_path: Path) -> Iterator[str]:
    with _serving(smtp, tmp_path) as url:
        yield url


@pytest.fixture
def confirming_app(smtp: Mailbox, tmp_path: Path) -> Iterator[str]:
    with _serving(smtp, tmp_path, FRAGMENTS_REQUIRE_EMAIL_CONFIRMATION="true") as url:
        yield url


def test_forgot_password_mail_link_new_password_signed_in(
    browser: Any,
    mail_app: str,
    smtp: Mailbox,
) -> None:
    from playwright.sync_api import expect

    email = f"reset-{secrets.token_hex(4)}@example.com"
    old_password, new_password = "the old password", "a fresh new password"
    made = httpx.post(
        f"{mail_app}/api/auth/signup", json={"email": email, "password": old_password}
    )
    assert made.status_code == 201, made.text

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    try:
        page.goto(mail_app)
        expect(page.get_by_test_id("account-guest")).to_be_visible(timeout=15_000)
        page.get_by_test_id("sign-in").click()
        page.get_by_test_id("auth-email").fill(email)
        page.get_by_test_id("forgot-password").click()
        expect(page.get_by_test_id("recovery-dialog")).to_contain_text("Reset your password")
        # The address typed into the sign-in dialog comes along.
        expect(page.get_by_test_id("reset-email")).to_have_value(email)
        page.get_by_test_id("reset-request").click()
        expect(page.get_by_test_id("reset-sent")).to_have_text(
            "If an account exists, we sent a link."
        )
        page.get_by_test_id("recovery-dialog").get_by_label("Close").click()

        (mail,) = smtp.wait_for(email)
        link, _token = mail.link("reset")
        assert link.startswith(f"{mail_app}/#reset=")

        # The link, opened as a mail client would: in a new tab.
        tab = context.new_page()
        tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        tab.goto(link)
        expect(tab.get_by_test_id("recovery-dialog")).to_contain_text(
            "Choose a new password", timeout=15_000
        )
        # The token left the address bar.
        assert "#reset=" not in tab.url
        tab.get_by_test_id("reset-password").fill(new_password)
        tab.get_by_test_id("reset-submit").click()
        expect(tab.get_by_test_id("recovery-done")).to_contain_text(
            "you're signed in", timeout=15_000
        )
        tab.get_by_test_id("recovery-close").click()
        expect(tab.get_by_test_id("account-email")).to_have_text(email, timeout=15_000)

        # Opening the spent link again tells so.
        tab.goto(link)
        tab.get_by_test_id("reset-password").fill("yet another password")
        tab.get_by_test_id("reset-submit").click()
        expect(tab.get_by_test_id("recovery-error")).to_contain_text("already used")

        login = f"{mail_app}/api/auth/login"
        assert httpx.post(login, json={"email": email, "password": old_password}).status_code == 401
        assert httpx.post(login, json={"email": email, "password": new_password}).status_code == 200
        assert problems == []
    finally:
        context.close()


def test_sign_up_confirm_by_mail_signed_in(
    browser: Any,
    confirming_app: str,
    smtp: Mailbox,
) -> None:
    from playwright.sync_api import expect

    email = f"confirm-{secrets.token_hex(4)}@example.com"
    password = "a long enough password"
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    try:
        page.goto(confirming_app)
        expect(page.get_by_test_id("account-guest")).to_be_visible(timeout=15_000)
        page.get_by_test_id("sign-up").click()
        page.get_by_test_id("auth-email").fill(email)
        page.get_by_test_id("auth-password").fill(password)
        page.get_by_test_id("auth-submit").click()
        expect(page.get_by_test_id("confirm-sent")).to_contain_text(email, timeout=15_000)
        page.get_by_test_id("recovery-dialog").get_by_label("Close").click()

        # Signing in before confirming leads back to "check your mail".
        page.get_by_test_id("sign-in").click()
        page.get_by_test_id("auth-email").fill(email)
        page.get_by_test_id("auth-password").fill(password)
        page.get_by_test_id("auth-submit").click()
        expect(page.get_by_test_id("confirm-sent")).to_be_visible(timeout=15_000)
        page.get_by_test_id("recovery-dialog").get_by_label("Close").click()

        (mail,) = smtp.wait_for(email)
        link, _token = mail.link("confirm")
        assert link.startswith(f"{confirming_app}/#confirm=")
        # Opened in the tab that shows the app: only the `#...` part changes.
        page.goto(link)
        expect(page.get_by_test_id("recovery-done")).to_have_text(
            "Address confirmed — you're signed in.", timeout=15_000
        )
        page.get_by_test_id("recovery-close").click()
        expect(page.get_by_test_id("account-email")).to_have_text(email, timeout=15_000)

        # The spent link again: the page says so and offers to sign in.
        page.get_by_test_id("sign-out").click()
        expect(page.get_by_test_id("account-guest")).to_be_visible(timeout=15_000)
        page.goto(link)
        expect(page.get_by_test_id("recovery-error")).to_contain_text("already used")
        page.get_by_test_id("confirm-sign-in").click()
        page.get_by_test_id("auth-email").fill(email)
        page.get_by_test_id("auth-password").fill(password)
        page.get_by_test_id("auth-submit").click()
        expect(page.get_by_test_id("account-email")).to_have_text(email, timeout=15_000)
        assert problems == []
    finally:
        context.close()
