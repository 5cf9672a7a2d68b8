"""The workspace features in Chromium against the real app and the local sandbox: upload a CSV
and see a chart of it; undo and restore; download the ZIP and compare it with the fragment;
publish a Streamlit app, open its link, and see the page a visitor gets once it expired; the
history on a narrow viewport."""

from __future__ import annotations

import io
import re
import secrets
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeOpenAI, FragmentReply
from tests.web.app_process import serve_app
from tests.web.test_browser import (
    GUEST_LIMITS_OFF,
    browser,
    open_app,
    openai_model_id,
    probed_page,
    provider_env,
    send_prompt,
)

pytestmark = pytest.mark.browser
__all__ = ["browser"]

POOLS = '{"code-interpreter-v1": 1, "streamlit-developer": 0, "gradio-developer": 0}'
CSV = "city,sales\nParis,120\nLyon,80\nNice,45\n"
CHART = """import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv("sales.csv")
print("rows:", len(df), "total:", df["sales"].sum())
df.plot.bar(x="city", y="sales")
plt.show()
"""


def interpreter(title: str, code: str) -> dict[str, Any]:
    return {
        "commentary": f"{title}.",
        "template": "code-interpreter-v1",
        "title": title,
        "description": title,
        "additional_dependencies": [],
        "has_additional_dependencies": False,
        "install_dependencies_command": "",
        "port": None,
        "file_path": "script.py",
        "code": code,
    }


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def app_url(fake_openai: FakeOpenAI, data_dir: Path) -> Iterator[str]:
    with serve_app(
        data_dir,
        **provider_env(fake_openai),
        **GUEST_LIMITS_OFF,
        FRAGMENTS_SANDBOX_POOL_SIZES=POOLS,
    ) as url:
        yield url


def test_upload_a_csv_chart_it_undo_restore_and_download(
    browser: Any, app_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    fake_openai.reset()
    fake_openai.script(
        FragmentReply(interpreter("Sales chart", CHART)),
        FragmentReply(interpreter("Second try", 'print("second")\n')),
    )
    errors: list[str] = []
    context, page = probed_page(browser, errors)
    try:
        open_app(page, app_url, openai_model_id(app_url))
        csv = tmp_path / "sales.csv"
        csv.write_text(CSV)
        page.get_by_test_id("data-file-input").set_input_files(str(csv))
        chip = page.locator('[data-testid="data-file"][data-name="sales.csv"]')
        expect(chip).to_have_count(1, timeout=15_000)

        send_prompt(page, "Chart the sales per city")
        expect(page.get_by_test_id("stdout")).to_contain_text("rows: 3 total: 245", timeout=90_000)
        chart = page.locator('[data-testid="result"][data-kind="png"] img')
        expect(chart).to_have_count(1)
        # The model was told about the file: name, size and first lines.
        system = str(fake_openai.requests[-1].json["messages"][0]["content"])
        assert "sales.csv" in system
        assert "Paris,120" in system

        # The ZIP of this version holds the fragment's code, the data and a manifest.
        with page.expect_download() as download_info:
            page.get_by_test_id("download-zip").click()
        path = download_info.value.path()
        archive = zipfile.ZipFile(io.BytesIO(Path(path).read_bytes()))
        assert archive.read("script.py").decode() == CHART
        assert archive.read("sales.csv").decode() == CSV
        assert "pandas" in archive.read("requirements.txt").decode()
        assert "README.md" in archive.namelist()

        # A second turn, then undo it: the chat is back to the first exchange.
        send_prompt(page, "Try something else")
        expect(page.get_by_test_id("stdout")).to_contain_text("second", timeout=60_000)
        expect(page.get_by_test_id("message-user")).to_have_count(2)
        page.get_by_test_id("undo-button").click()
        expect(page.get_by_test_id("message-user")).to_have_count(1)

        # The versions menu lists both (v2 undone); restoring v2 makes it v3, current.
        page.get_by_test_id("versions-button").click()
        items = page.get_by_test_id("version-item")
        expect(items).to_have_count(2)
        expect(page.locator('[data-testid="version-item"][data-version="2"]')).to_contain_text(
            "undone"
        )
        page.locator('[data-testid="version-item"][data-version="2"]').get_by_test_id(
            "restore-version"
        ).click()
        expect(page.get_by_test_id("message-user")).to_have_count(2)
        expect(page.get_by_test_id("message-user").last).to_contain_text("Restore version 2")
        expect(page.get_by_test_id("stdout")).to_contain_text("second", timeout=60_000)
        page.get_by_test_id("versions-button").click()
        current = page.locator('[data-testid="version-item"][data-current="true"]')
        expect(current).to_have_attribute("data-version", "3")

        # Reopened, the conversation brings its data file back.
        page.reload()
        expect(page.locator('[data-testid="data-file"][data-name="sales.csv"]')).to_have_count(
            1, timeout=15_000
        )
        assert errors == []
    finally:
        context.close()


def test_history_is_reachable_on_a_narrow_viewport(
    browser: Any, app_url: str, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    fake_openai.reset()
    fake_openai.script(FragmentReply(interpreter("Narrow", 'print("narrow")\n')))
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    try:
        open_app(page, app_url, openai_model_id(app_url))
        send_prompt(page, "Something small")
        expect(page.get_by_test_id("stdout")).to_contain_text("narrow", timeout=60_000)
        history = page.get_by_test_id("history")
        expect(history).to_be_hidden()
        page.get_by_test_id("new-chat").click()
        page.get_by_test_id("history-toggle").click()
        expect(history).to_be_visible()
        item = page.get_by_test_id("history-item").first
        expect(item).to_be_visible()
        item.locator(".history-open").click()
        expect(history).to_be_hidden()
        expect(page.get_by_test_id("message-user")).to_have_text("Something small")
    finally:
        context.close()


def test_publish_a_web_app_open_the_link_and_see_it_expire(
    browser: Any, app_url: str, fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    from playwright.sync_api import expect

    marker = f"Published {secrets.token_hex(3)}"
    app = {
        **interpreter("Published app", f"import streamlit as st\nst.title({marker!r})\n"),
        "template": "streamlit-developer",
        "port": 8501,
        "file_path": "app.py",
    }
    fake_openai.reset()
    fake_openai.script(FragmentReply(app))
    errors: list[str] = []
    context, page = probed_page(browser, errors)
    try:
        open_app(page, app_url, openai_model_id(app_url))
        send_prompt(page, "A tiny Streamlit app")
        inner = page.frame_locator('[data-testid="preview-iframe"]')
        expect(inner.get_by_text(marker)).to_be_visible(timeout=90_000)

        durations = page.get_by_test_id("publish-duration").locator("option")
        expect(durations).to_have_text(["30 minutes", "1 hour", "3 hours", "6 hours", "1 day"])
        page.get_by_test_id("publish-duration").select_option("30m")
        page.get_by_test_id("publish-button").click()
        link = page.get_by_test_id("published-url")
        expect(link).to_have_attribute("href", re.compile(r"/s/[\w-]+$"), timeout=15_000)
        url = str(link.get_attribute("href"))

        # A visitor (another browser context, nobody signed in) opens the link: the app.
        visitor = browser.new_context(viewport={"width": 1000, "height": 700})
        try:
            seen = visitor.new_page()
            seen.goto(url)
            expect(seen.get_by_text(marker)).to_be_visible(timeout=60_000)

            # Once the link's time is over, the visitor gets a clear page, not a bare 404.
            link_id = url.rsplit("/", 1)[1]
            with sqlite3.connect(data_dir / "fragments.db") as db:
                db.execute(
                    "UPDATE short_links SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?",
                    (link_id,),
                )
            response = seen.goto(url)
            assert response is not None
            assert response.status == 410
            expect(seen.get_by_test_id("link-expired")).to_contain_text("This link has expired")
            expect(
                seen.get_by_role("link", name="Make your own app with Fragments")
            ).to_be_visible()
            unknown = seen.goto(url.rsplit("/", 1)[0] + "/nope")
            assert unknown is not None
            assert unknown.status == 404
            expect(seen.get_by_test_id("link-not-found")).to_be_visible()
        finally:
            visitor.close()
        assert errors == []
    finally:
        context.close()
