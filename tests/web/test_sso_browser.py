"""Single sign-on in the browser: the sign-in dialog's "Sign in with ..." button, the real
provider's pages (npm oidc-provider), the return to the page signed in; a cancelled sign-in is
told in one sentence."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.oidc_provider import OidcProvider, run_provider
from tests.web.test_browser import (  # noqa: F401 - fixtures
    CHROMIUM,
    STATIC,
    _free_port,
    _tail,
    browser,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def provider(port: int) -> Iterator[OidcProvider]:
    with run_provider(f"http://127.0.0.1:{port}/api/auth/oidc/callback") as running:
        yield running


@pytest.fixture(scope="module")
def sso_app(
    port: int, provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The real app in its own process, signing in through the provider."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium package is not installed; make install installs it")
    if not (STATIC / "vendor" / "preact.js").is_file():
        pytest.fail("the UI's vendor files are missing: run `make assets`")
    data = tmp_path_factory.mktemp("data")
    url = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL")) and not k.startswith("FRAGMENTS_")
    }
    env.update(
        FRAGMENTS_DATA_DIR=str(data),
        FRAGMENTS_PUBLIC_URL=url,
        FRAGMENTS_OIDC_ISSUER=provider.issuer,
        FRAGMENTS_OIDC_CLIENT_ID=provider.client_id,
        FRAGMENTS_OIDC_CLIENT_SECRET=provider.client_secret,
        FRAGMENTS_OIDC_NAME="Acme ID",
        FRAGMENTS_SANDBOX_POOL_SIZES="{}",
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    log = (data / "server.log").open("wb")
    command = [sys.executable, "-m", "fragments.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_healthy(proc, url, data / "server.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the app exited ({proc.returncode}):\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the app did not answer /healthz:\n{_tail(log)}")
        time.sleep(0.1)


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
