"""Warm pools: a pre-imported interpreter and a serving Streamlit are handed out once each,
refilled in the background, and never shared by two owners."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fragments.config import Settings
from fragments.sandbox.local.build import TemplateEnv, build_template
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.local.web import WebSandbox
from fragments.schemas import Fragment, InterpreterResult, WebResult

from .conftest import INTERPRETER, fragment

pytestmark = pytest.mark.anyio

STREAMLIT = "streamlit-developer"


@pytest.fixture(scope="session")
def streamlit_env() -> TemplateEnv:
    return build_template(Settings(_env_file=None), STREAMLIT)


@pytest.fixture
async def pooled(
    sandbox_settings: Settings, streamlit_env: TemplateEnv
) -> AsyncIterator[LocalSandboxService]:
    settings = sandbox_settings.model_copy(
        update={"sandbox_pool_sizes": {INTERPRETER: 1, STREAMLIT: 1}}
    )
    svc = LocalSandboxService(settings)
    await svc.check()  # sets the service up, which starts the pool
    try:
        async with asyncio.timeout(60):
            await svc.pool.wait_full()
        yield svc
    finally:
        await svc.aclose()


async def test_a_warm_interpreter_has_its_libraries_imported(
    pooled: LocalSandboxService,
) -> None:
    phases: list[str] = []

    async def on_phase(phase: str) -> None:
        phases.append(phase)

    code = "import sys\nprint(all(m in sys.modules for m in ('numpy', 'pandas', 'matplotlib')))"
    first = await pooled.execute(fragment(code), owner="a", on_phase=on_phase)  # type: ignore[arg-type]
    assert isinstance(first, InterpreterResult)
    assert first.stdout == ["True\n"]
    assert phases == ["acquiring", "running"]  # no "starting": the kernel was already up
    assert pooled.pool.ready(INTERPRETER) == 0
    # Refilled in the background; the next owner gets another sandbox, never a's.
    async with asyncio.timeout(60):
        await pooled.pool.wait_full()
    second = await pooled.execute(fragment("print('b')"), owner="b")
    assert second.sandbox_id != first.sandbox_id
    assert pooled.sandbox_for("a") is not pooled.sandbox_for("b")


async def test_concurrent_owners_never_share_a_pooled_sandbox(
    pooled: LocalSandboxService,
) -> None:
    results = await asyncio.gather(
        *(pooled.execute(fragment(f"x = {i}\nprint(x)"), owner=f"o{i}") for i in range(3))
    )
    ids = {r.sandbox_id for r in results}
    assert len(ids) == 3
    for i, result in enumerate(results):
        assert isinstance(result, InterpreterResult)
        assert result.stdout == [f"{i}\n"]


async def test_a_warm_streamlit_slot_serves_the_new_app(pooled: LocalSandboxService) -> None:
    fragment_ = Fragment.model_validate(
        {"template": STREAMLIT, "code": "import streamlit as st\nst.write('from the pool')\n"}
    )
    result = await pooled.execute(fragment_, owner="web")
    assert isinstance(result, WebResult)
    assert result.error is None
    sandbox = pooled.sandbox_for("web")
    assert isinstance(sandbox, WebSandbox)
    assert sandbox.starts == 1  # started by the pool, not restarted for the request
    assert "from the pool" in (sandbox.home / "app.py").read_text()


@pytest.mark.slow
async def test_a_warm_gradio_slot_runs_the_new_app(sandbox_settings: Settings) -> None:
    build_template(Settings(_env_file=None), "gradio-developer")
    settings = sandbox_settings.model_copy(update={"sandbox_pool_sizes": {"gradio-developer": 1}})
    svc = LocalSandboxService(settings)
    try:
        await svc.check()
        async with asyncio.timeout(90):
            await svc.pool.wait_full()
        code = (
            "import gradio as gr\n"
            "demo = gr.Interface(fn=str.upper, inputs='text', outputs='text')\n"
        )
        fragment_ = Fragment.model_validate({"template": "gradio-developer", "code": code})
        result = await svc.execute(fragment_, owner="g")
        assert isinstance(result, WebResult)
        assert result.error is None, result.error
        sandbox = svc.sandbox_for("g")
        assert isinstance(sandbox, WebSandbox)
        assert sandbox.starts == 1  # the pooled launcher ran the app; no restart
    finally:
        await svc.aclose()
