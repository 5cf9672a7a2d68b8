"""Every web template from the UI: a chat turn makes a Gradio, Next.js or Nuxt fragment, the app
builds the template if it is missing (phase `installing`), starts the sandbox and the page's
iframe shows the app rendered by the dev server through the preview proxy. (Streamlit has its
own test in test_browser.py, in the default suite.)

Slow: a Node template not yet in the cache is built on first use (npm ci, minutes), and a cold
Next.js or Nuxt dev server compiles for 10-20 s with one CPU.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.fakes import FakeOpenAI, FragmentReply
from tests.web.test_browser import (  # noqa: F401 - fixtures used by name
    FRAGMENT,
    app_url,
    browser,
    fake_openai,
    open_app,
    openai_model_id,
    probed_page,
    send_prompt,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GRADIO_CODE = """import gradio as gr

with gr.Blocks() as demo:
    gr.Markdown("# Gradio in the preview")
    name = gr.Textbox(label="Name")

demo.launch(server_name="0.0.0.0", server_port=7860)
"""
NEXT_CODE = """export default function Home() {
  return <main className="p-8"><h1 className="text-2xl">Next.js in the preview</h1></main>;
}
"""
NUXT_CODE = """<template>
  <main class="p-8"><h1 class="text-2xl">Nuxt in the preview</h1></main>
</template>
"""
CASES = {
    "gradio-developer": (7860, "app.py", GRADIO_CODE, "Gradio in the preview"),
    "nextjs-developer": (3000, "pages/index.tsx", NEXT_CODE, "Next.js in the preview"),
    "vue-developer": (3000, "app/app.vue", NUXT_CODE, "Nuxt in the preview"),
}


@pytest.mark.parametrize("template", sorted(CASES))
def test_a_web_template_renders_in_the_preview_iframe(
    browser: Any,  # noqa: F811
    app_url: str,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
    template: str,
) -> None:
    from playwright.sync_api import expect

    port, path, code, marker = CASES[template]
    fragment = {
        **FRAGMENT,
        "commentary": f"A small {template} app.",
        "template": template,
        "title": marker,
        "port": port,
        "file_path": path,
        "code": code,
    }
    fake_openai.reset()
    fake_openai.script(FragmentReply(fragment, chunk_size=64, delay=0.01))
    errors: list[str] = []
    context, page = probed_page(browser, errors)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
    try:
        open_app(page, app_url, openai_model_id(app_url))
        send_prompt(page, f"Make me a {template} app")

        iframe = page.get_by_test_id("preview-iframe")
        # A missing template is built first (npm ci), then a cold dev server compiles.
        expect(iframe).to_have_count(1, timeout=900_000)
        src = iframe.get_attribute("src") or ""
        app_port = app_url.rsplit(":", 1)[1]
        assert re.fullmatch(rf"http://{port}-[0-9a-f]+\.localhost:{app_port}/", src), src
        inner = page.frame_locator('[data-testid="preview-iframe"]')
        expect(inner.get_by_text(marker)).to_be_visible(timeout=180_000)
        # The address is shown above the preview and copied by its button.
        expect(page.get_by_test_id("preview-url")).to_contain_text(src)
        page.get_by_test_id("copy-url").click()
        expect(page.get_by_test_id("copy-url")).to_have_attribute("title", "Copied")
        assert page.evaluate("navigator.clipboard.readText()") == src
        # The UI showed the sandbox's phases rather than a bare spinner.
        phases = page.evaluate("window.__phases")
        assert {"acquiring", "installing", "starting", "running"} & set(phases), phases
        assert page.evaluate("window.__csp") == []
        assert errors == []
    finally:
        context.close()
