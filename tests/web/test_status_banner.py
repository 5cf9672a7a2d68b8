"""The quiet provider banner in a real browser: the app's health checks find the fake OpenAI
server failing, so choosing an OpenAI model shows the banner; another provider's model does
not; once the provider answers again, a reload shows no banner."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import ErrorReply, FakeOpenAI
from tests.web.app_process import serve_app
from tests.web.test_browser import CHROMIUM_ARGS, GUEST_LIMITS_OFF, browser, provider_env

pytestmark = pytest.mark.browser

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        fake.models_reply = ErrorReply(503, "down for the test")
        yield fake


@pytest.fixture(scope="module")
def app_url(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(
        tmp_path_factory.mktemp("data"),
        **provider_env(fake_openai),
        **GUEST_LIMITS_OFF,
        FRAGMENTS_HEALTH_INTERVAL_SECONDS="1",
    ) as url:
        yield url


def wait_status(app_url: str, state: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        providers = httpx.get(f"{app_url}/api/status").json()["providers"]
        if any(p["provider"] == "openai" and p["status"] == state for p in providers):
            return
        time.sleep(0.1)
    raise AssertionError(f"openai never became {state}")


def test_the_banner_follows_the_chosen_providers_health(
    browser: Any, app_url: str, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    assert CHROMIUM_ARGS  # the same browser set-up as the main browser test
    models = httpx.get(f"{app_url}/api/models").json()
    openai = next(m for m in models if m["providerId"] == "openai")
    other = next(m for m in models if m["providerId"] == "anthropic")
    wait_status(app_url, "down")
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    try:
        page.goto(app_url)
        page.wait_for_selector('[data-testid="model-select"] option', state="attached")
        page.select_option('[data-testid="model-select"]', f"openai:{openai['id']}")
        banner = page.get_by_test_id("provider-banner")
        expect(banner).to_be_visible(timeout=15_000)
        expect(banner).to_have_attribute("data-status", "down")
        expect(banner).to_contain_text("OpenAI is not answering right now")
        page.select_option('[data-testid="model-select"]', f"anthropic:{other['id']}")
        expect(banner).to_have_count(0)  # Anthropic has no platform key: never checked
        fake_openai.models_reply = None
        wait_status(app_url, "up")
        page.select_option('[data-testid="model-select"]', f"openai:{openai['id']}")
        with page.expect_response(lambda r: r.url.endswith("/api/status")) as answered:
            page.reload()
        assert answered.value.ok  # the page asked again, and heard "up"
        page.wait_for_selector('[data-testid="model-select"] option', state="attached")
        expect(page.locator('[data-testid="model-select"]')).to_have_value(f"openai:{openai['id']}")
        expect(page.get_by_test_id("chat-input")).to_be_visible()
        expect(page.get_by_test_id("provider-banner")).to_have_count(0)
        assert problems == []
    finally:
        context.close()
