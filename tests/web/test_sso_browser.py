"""Single sign-on in the browser: the sign-in dialog's "Sign in with ..." button, the real
provider's pages (npm oidc-provider), the return to the page signed in; a cancelled sign-in is
told in one sentence."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.oidc_provider import OidcProvider, run_provider
from tests.web.app_process import free_port, serve_app
from tests.web.test_browser import browser  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def provider(port: int) -> Iterator[OidcProvider]:
    with run_provider(f"http://127.0.0.1:{port}/api/auth/oidc/callback") as running:
        yield running


@pytest.fixture(scope="module")
def sso_app(
    port: int, provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The real app in its own process, signing in through the provider."""
    with serve_app(
        tmp_path_factory.mktemp("data"),
        port=port,
        FRAGMENTS_PUBLIC_URL=f"http://127.0.0.1:{port}",
        FRAGMENTS_OIDC_ISSUER=provider.issuer,
        FRAGMENTS_OIDC_CLIENT_ID=provider.client_id,
        FRAGMENTS_OIDC_CLIENT_SECRET=provider.client_secret,
        FRAGMENTS_OIDC_NAME="Acme ID",
        FRAGMENTS_SANDBOX_POOL_SIZES="{}",
    ) as url:
        yield url


def test_sign_in_with_the_provider_and_cancel(
    browser: Any,  # noqa: F811
    sso_app: str,
    provider: OidcProvider,
) -> None:
    from playwright.sync_api import expect

    sub = f"browser-{secrets.token_hex(4)}"
    email = f"{sub}@example.com"
    provider.add_account_sync(sub, email)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    try:
        page.goto(sso_app)
        page.get_by_test_id("sign-in").click()
        button = page.get_by_test_id("sso-sign-in")
        expect(button).to_have_text("Sign in with Acme ID", timeout=15_000)

        # Cancelled at the provider: back on the page, told so, still a guest.
        button.click()
        page.locator('input[name="login"]').wait_for(timeout=15_000)
        page.get_by_text("[ Cancel ]").click()
        expect(page.get_by_test_id("error-detail")).to_have_text(
            "Sign-in was cancelled at the provider.", timeout=15_000
        )
        expect(page.get_by_test_id("account-guest")).to_be_visible()
        assert "sso_error" not in page.url

        # Signed in at the provider (its login form, then its consent form): back signed in.
        page.get_by_test_id("sign-in").click()
        page.get_by_test_id("sso-sign-in").click()
        page.locator('input[name="login"]').fill(sub)
        page.locator('input[name="password"]').fill("any password")
        page.locator('button[type="submit"]').click()
        page.locator('input[name="prompt"][value="consent"]').wait_for(
            state="attached", timeout=15_000
        )
        page.locator('button[type="submit"]').click()
        expect(page.get_by_test_id("account-email")).to_have_text(email, timeout=15_000)
        # The one-time code left the address bar at once.
        assert "sso" not in page.url
        # A reload keeps the session (the tokens are the page's, like a password sign-in's).
        page.reload()
        expect(page.get_by_test_id("account-email")).to_have_text(email, timeout=15_000)
        assert problems == []
    finally:
        context.close()
