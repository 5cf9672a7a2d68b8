"""Editing code by hand in Chromium (CodeMirror in the code view) against the real app, the
local sandbox and a fake OpenAI server at the wire: the edit runs, is listed as the user's
version, and the next model turn starts from it. Development defaults (a guest session) and
production settings (an account)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
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
EDITED = 'print("edited by hand", 6 * 7)'


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


@pytest.fixture(scope="module", params=["guests", "production"])
def app(
    request: pytest.FixtureRequest,
    fake_openai: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    """(the app's URL, its mode)."""
    mode = str(request.param)
    extra = (
        {"FRAGMENTS_ENV": "production", "FRAGMENTS_SECRET_KEY": secrets.token_urlsafe(32)}
        if mode == "production"
        else GUEST_LIMITS_OFF
    )
    with serve_app(
        tmp_path_factory.mktemp(f"edit-{mode}"),
        **provider_env(fake_openai),
        **extra,
        FRAGMENTS_SANDBOX_POOL_SIZES=POOLS,
    ) as url:
        yield url, mode


def signed_up(app_url: str) -> str:
    """An account's tokens, as the page keeps them (production lets nobody in without one)."""
    response = httpx.post(
        f"{app_url}/api/auth/signup",
        json={"email": f"edit-{secrets.token_hex(4)}@example.com", "password": "a long password"},
    )
    assert response.status_code == 201, response.text
    return json.dumps(response.json())


def editor_text(page: Any) -> str:
    return str(page.locator('[data-testid="code-editor"] .cm-content').inner_text())


def test_edit_by_hand_run_and_the_next_turn_keeps_the_edit(
    browser: Any, app: tuple[str, str], fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    app_url, mode = app
    fake_openai.reset()
    fake_openai.script(
        FragmentReply(interpreter("Answer", 'print("from the model")\n')),
        FragmentReply(interpreter("Twice", 'print("second turn")\n')),
    )
    errors: list[str] = []
    context, page = probed_page(browser, errors)
    if mode == "production":
        tokens = signed_up(app_url)
        context.add_init_script(
            f"if (!localStorage.getItem('fragments.session'))"
            f" localStorage.setItem('fragments.session', {json.dumps(tokens)});"
        )
    try:
        open_app(page, app_url, openai_model_id(app_url))
        send_prompt(page, "Print something")
        expect(page.get_by_test_id("stdout")).to_contain_text("from the model", timeout=90_000)

        # Edit the code by hand: CodeMirror replaces the highlighted view, with Python support.
        page.get_by_test_id("tab-code").click()
        expect(page.get_by_test_id("run-edit")).to_have_count(0)
        page.get_by_test_id("edit-code").click()
        editor = page.get_by_test_id("code-editor")
        expect(editor).to_have_attribute("data-state", "ready", timeout=15_000)
        expect(editor).to_have_attribute("data-path", "script.py")
        assert editor_text(page).strip() == 'print("from the model")'
        assert page.locator('[data-testid="code-editor"] .cm-content span').count() > 0
        expect(page.get_by_test_id("run-edit")).to_be_disabled()
        page.locator('[data-testid="code-editor"] .cm-content').click()

        # An edit over the server's limit (512 KB, inserted at once: typing it would take
        # minutes) is refused with the reason; the editor keeps the text, the chat is as it was.
        page.keyboard.press("Control+End")
        page.keyboard.insert_text("\n#" + "x" * (600 * 1024) + "\n")
        page.get_by_test_id("run-edit").click()
        expect(page.get_by_test_id("error-banner")).to_contain_text("KB", timeout=15_000)
        expect(editor).to_be_visible()
        assert "x" * 100 in editor_text(page)
        expect(page.get_by_test_id("run-edit")).to_be_enabled()
        expect(page.get_by_test_id("message-user")).to_have_count(1)

        page.locator('[data-testid="code-editor"] .cm-content').click()
        page.keyboard.press("Control+A")
        page.keyboard.type(EDITED)
        assert editor_text(page).strip() == EDITED

        # The editor's colours are the app's: light now, dark after the theme toggle, and the
        # text typed so far survives the switch.
        light = page.locator(".cm-editor").evaluate("e => getComputedStyle(e).backgroundColor")
        page.get_by_test_id("theme-toggle").click()
        expect(page.locator(".cm-editor")).not_to_have_css("background-color", light)
        assert editor_text(page).strip() == EDITED
        page.get_by_test_id("theme-toggle").click()
        expect(page.locator(".cm-editor")).to_have_css("background-color", light)

        # Looking at the preview and coming back loses nothing typed.
        page.get_by_test_id("tab-preview").click()
        expect(page.get_by_test_id("code-editor")).to_have_count(0)
        page.get_by_test_id("tab-code").click()
        expect(editor).to_have_attribute("data-state", "ready")
        assert editor_text(page).strip() == EDITED

        # A reload before running loses nothing typed either: the conversation reopens with the
        # editor on the unsaved edit (kept in the tab's storage).
        page.reload()
        expect(page.get_by_test_id("stdout")).to_contain_text("from the model", timeout=90_000)
        page.get_by_test_id("tab-code").click()
        expect(editor).to_have_attribute("data-state", "ready", timeout=15_000)
        assert editor_text(page).strip() == EDITED
        expect(page.get_by_test_id("run-edit")).to_be_enabled()

        # Run (Ctrl+Enter in the editor, as the Run button): the edit is saved as a new version
        # and the sandbox runs it.
        page.locator('[data-testid="code-editor"] .cm-content').click()
        page.keyboard.press("Control+Enter")
        expect(page.get_by_test_id("stdout")).to_contain_text("edited by hand 42", timeout=90_000)
        expect(page.get_by_test_id("error-banner")).to_have_count(0)
        expect(page.get_by_test_id("message-user").last).to_contain_text(
            "Edited the code by hand (from version 1)"
        )
        page.get_by_test_id("tab-code").click()
        assert page.get_by_test_id("code-view").text_content() == EDITED
        # Saved, the draft is gone from the tab's storage: a reload shows the new version.
        assert page.evaluate("sessionStorage.getItem('fragments.drafts.v1')") in (None, "{}")
        page.get_by_test_id("versions-button").click()
        edited = page.locator('[data-testid="version-item"][data-version="2"]')
        expect(edited).to_contain_text("edited by you from v1")
        expect(edited).to_have_attribute("data-current", "true")
        page.keyboard.press("Escape")

        # The next turn: the model is given the edited code as the current version.
        send_prompt(page, "Now print it twice")
        expect(page.get_by_test_id("stdout")).to_contain_text("second turn", timeout=90_000)
        sent = fake_openai.requests[-1].json["messages"]
        last = json.dumps(sent[-1]["content"])
        assert "Now print it twice" in last
        assert "edited by hand" in last
        assert "from the model" not in last

        # Reopened, the conversation still holds the edit as version 2.
        page.reload()
        expect(page.get_by_test_id("message-user")).to_have_count(3, timeout=15_000)
        expect(page.get_by_test_id("message-user").nth(1)).to_contain_text("Edited the code")
        assert page.evaluate("window.__csp") == []
        assert errors == []
    finally:
        context.close()


# One small file per language the templates write; a plain-text file gets no highlighting.
SAMPLES = {
    "app.py": "import os\n\ndef main():\n    return os.getcwd()  # where\n",
    "index.js": "export function add(a, b) {\n  return a + b; // sum\n}\n",
    "page.tsx": "type P = { n: number };\nexport default function Page({ n }: P) {\n"
    '  return <div className="n">{n}</div>;\n}\n',
    "App.jsx": "export const App = () => <main id=\"app\">{'hi'}</main>;\n",
    "App.vue": '<template>\n  <div :class="box">{{ count }}</div>\n</template>\n'
    "<script setup>\nconst count = 1\n</script>\n<style>\n.box { color: red; }\n</style>\n",
    "index.html": '<!doctype html>\n<html><body class="x"><!-- c --><p>Hi</p></body></html>\n',
    "styles.css": "/* a card */\n.card { color: #333; margin: 0 auto; }\n",
    "data.json": '{"a": 1, "b": [true, null, "s"]}\n',
    "notes.txt": "just words here\n",
}


def test_the_editor_highlights_each_templates_language(browser: Any, app: tuple[str, str]) -> None:
    """The vendored CodeMirror bundle loads under the app's CSP and colours every language
    the templates write (distinct token colours per file); unknown files stay plain."""
    app_url, _ = app
    errors: list[str] = []
    context, page = probed_page(browser, errors)
    try:
        page.goto(app_url)
        colours = page.evaluate(
            """async (samples) => {
              const { createEditor, loadEditor } = await import("/static/js/lib/editor.js");
              const loaded = await loadEditor();
              const out = {};
              for (const [path, doc] of Object.entries(samples)) {
                const host = document.createElement("div");
                document.body.appendChild(host);
                const editor = createEditor(loaded, host, { doc, path, dark: false,
                  onChange: () => {} });
                const spans = host.querySelectorAll(".cm-content .cm-line span");
                out[path] = new Set([...spans].map((s) => getComputedStyle(s).color)).size;
                editor.destroy();
                host.remove();
              }
              return out;
            }""",
            SAMPLES,
        )
        for path, count in colours.items():
            if path == "notes.txt":
                assert count == 0, colours
            else:
                assert count >= 3, (path, colours)
        assert page.evaluate("window.__csp") == []
        assert errors == []
    finally:
        context.close()
