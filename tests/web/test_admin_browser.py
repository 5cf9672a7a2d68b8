"""The operator view in a real browser, against the real app in its own process: an operator
(made one with `fragments operators add`) sees the charts drawn from the stored usage; an
ordinary account and nobody signed in are refused, and see no figure."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fragments.auth.tokens import decode_access_token
from fragments.store.db import Database, Identity
from fragments.store.models import SandboxUsage, UsageRecord
from tests.web.app_process import serve_app
from tests.web.test_browser import browser  # noqa: F401 - fixture

pytestmark = pytest.mark.browser

SECRET = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("admin-data")
    with serve_app(data, FRAGMENTS_SECRET_KEY=SECRET) as url:
        yield url, data


def _sign_up(url: str, name: str) -> dict[str, str]:
    email = f"{name}-{secrets.token_hex(4)}@example.com"
    response = httpx.post(
        f"{url}/api/auth/signup", json={"email": email, "password": "correct horse battery"}
    )
    assert response.status_code == 201, response.text
    return {"email": email, **response.json()}


async def _seed(data: Path, access_token: str) -> None:
    """Today's usage of the account's team: two answers and a sandbox run."""
    claims = decode_access_token(access_token, SECRET)
    assert claims.user_id is not None
    assert claims.team_id is not None
    who = Identity(claims.user_id, claims.team_id)
    db = Database(f"sqlite+aiosqlite:///{data / 'fragments.db'}")
    try:
        async with db.transaction(who) as session:
            now = datetime.now(UTC)
            for model, cost in (("gpt-4o", 1.0), ("claude", 0.5)):
                session.add(
                    UsageRecord(
                        user_id=who.user_id, team_id=who.team_id, model=model, input_tokens=100,
                        output_tokens=20, cost_usd=cost, billed_to="platform", created_at=now,
                    )
                )  # fmt: skip
            session.add(
                SandboxUsage(
                    user_id=who.user_id, team_id=who.team_id, template="code-interpreter-v1",
                    seconds=2.5, created_at=now,
                )
            )  # fmt: skip
    finally:
        await db.aclose()


def _open_admin(chromium: Any, url: str, tokens: dict[str, str] | None) -> tuple[Any, list[str]]:
    context = chromium.new_context(viewport={"width": 1300, "height": 900})
    if tokens is not None:
        session = {"access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"]}
        context.add_init_script(
            f"localStorage.setItem('fragments.session', {json.dumps(json.dumps(session))});"
        )
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.goto(f"{url}/admin")
    return page, problems


def test_an_operator_sees_the_charts_and_others_are_refused(
    browser: Any,  # noqa: F811
    served: tuple[str, Path],
) -> None:
    from playwright.sync_api import expect

    url, data = served
    ops, alice = _sign_up(url, "ops"), _sign_up(url, "alice")
    env = {**os.environ, "FRAGMENTS_DATA_DIR": str(data)}
    env.pop("FRAGMENTS_DATABASE_URL", None)
    made = subprocess.run(
        [sys.executable, "-m", "fragments.cli", "operators", "add", ops["email"]],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    # Playwright's sync API runs an event loop in this thread: seed from another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _seed(data, alice["access_token"])).result(timeout=60)

    # The operator: totals, a bar per day of the window, alice's team with its cost.
    page, problems = _open_admin(browser, url, ops)
    try:
        expect(page.get_by_test_id("admin-totals")).to_be_visible(timeout=15_000)
        expect(page.get_by_test_id("total-cost")).to_contain_text("$1.50")
        expect(page.get_by_test_id("total-sandbox-runs")).to_contain_text("1")
        per_day = page.get_by_test_id("chart-cost-per-day").locator("rect.bar")
        expect(per_day).to_have_count(30)
        assert per_day.last.get_attribute("data-value") == "1.5"
        per_team = page.get_by_test_id("chart-cost-per-team").locator("rect.bar")
        expect(per_team).to_have_count(1)
        assert per_team.first.get_attribute("data-value") == "1.5"
        per_model = page.get_by_test_id("chart-cost-per-model").locator("rect.bar")
        expect(per_model).to_have_count(2)
        expect(page.get_by_test_id("chart-sandbox-p95").locator("circle.dot")).to_have_count(1)
        expect(page.get_by_test_id("team-row")).to_have_count(1)
        expect(page.get_by_test_id("admin-refused")).to_have_count(0)
        # A shorter window redraws with fewer days.
        page.get_by_test_id("admin-days").select_option("7")
        expect(per_day).to_have_count(7)
        assert problems == []
    finally:
        page.context.close()

    # An ordinary account: refused, no figure.
    page, problems = _open_admin(browser, url, alice)
    try:
        refused = page.get_by_test_id("admin-refused")
        expect(refused).to_be_visible(timeout=15_000)
        expect(refused).to_have_attribute("data-status", "403")
        expect(refused).to_contain_text("operators")
        expect(page.get_by_test_id("admin-totals")).to_have_count(0)
        expect(page.locator("rect.bar")).to_have_count(0)
        assert problems == []
    finally:
        page.context.close()

    # Nobody signed in: asked to sign in first.
    page, problems = _open_admin(browser, url, None)
    try:
        refused = page.get_by_test_id("admin-refused")
        expect(refused).to_be_visible(timeout=15_000)
        expect(refused).to_have_attribute("data-status", "401")
        expect(page.locator("rect.bar")).to_have_count(0)
        assert problems == []
    finally:
        page.context.close()
