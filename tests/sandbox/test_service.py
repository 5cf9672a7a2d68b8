"""The local sandbox service with the real kernel: outputs, rich results, state and lifetimes."""

from __future__ import annotations

import asyncio
import base64

import psutil
import pytest

from fragments.config import Settings
from fragments.errors import BadRequest
from fragments.sandbox.local.service import LocalSandboxService
from fragments.schemas import InterpreterResult

from .conftest import INTERPRETER, fragment

pytestmark = pytest.mark.anyio


async def run(
    service: LocalSandboxService, code: str, owner: str | None = "conv-1", **kw: object
) -> InterpreterResult:
    result = await service.execute(fragment(code, **kw), owner=owner)
    assert isinstance(result, InterpreterResult)
    return result


async def test_stdout_stderr_and_error_with_traceback(service: LocalSandboxService) -> None:
    result = await run(
        service,
        "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n"
        "def f():\n    raise ValueError('bad value')\nf()",
    )
    assert result.template == INTERPRETER
    assert "".join(result.stdout) == "hello\n"
    assert "".join(result.stderr) == "oops\n"
    assert result.error is not None
    assert result.error.name == "ValueError"
    assert result.error.value == "bad value"
    assert "\x1b[" not in result.error.traceback
    assert "raise ValueError('bad value')" in result.error.traceback
    assert "f()" in result.error.traceback


async def test_matplotlib_chart_is_a_png(service: LocalSandboxService) -> None:
    result = await run(
        service, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()"
    )
    assert result.error is None, result.error
    assert len(result.results) == 1
    png = result.results[0].png
    assert png is not None
    assert not png.startswith("data:")
    assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")


async def test_every_display_result_in_order(service: LocalSandboxService) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "from IPython.display import HTML, Markdown, display\n"
        "plt.plot([1, 2]); plt.show()\n"
        "print('between')\n"
        "plt.bar([1, 2], [3, 4]); plt.show()\n"
        "display(HTML('<b>bold</b>'))\n"
        "display(Markdown('# title'))\n"
        "{'answer': 42}"
    )
    result = await run(service, code)
    assert result.error is None, result.error
    kinds = [
        "png" if r.png else "html" if r.html else "markdown" if r.markdown else "text"
        for r in result.results
    ]
    assert kinds == ["png", "png", "html", "markdown", "text"]
    assert result.results[0].png != result.results[1].png
    assert result.results[2].html == "<b>bold</b>"
    assert [r.is_main_result for r in result.results] == [False, False, False, False, True]
    assert result.results[4].text == "{'answer': 42}"
    assert result.stdout == ["between\n"]


async def test_dataframe_as_last_expression(service: LocalSandboxService) -> None:
    result = await run(
        service, "import pandas as pd\npd.DataFrame({'city': ['Oslo', 'Lima'], 'n': [1, 2]})"
    )
    assert result.error is None, result.error
    [table] = result.results
    assert table.is_main_result
    assert table.text is not None
    assert "Oslo" in table.text
    assert table.html is not None
    assert "<table" in table.html
    assert "Lima" in table.html


async def test_state_is_kept_per_owner_and_never_shared(service: LocalSandboxService) -> None:
    first = await run(service, "x = 41", owner="conv-a")
    assert first.error is None
    again = await run(service, "print(x + 1)", owner="conv-a")
    assert again.stdout == ["42\n"]
    assert again.sandbox_id == first.sandbox_id
    other = await run(service, "print(x)", owner="conv-b")
    assert other.error is not None
    assert other.error.name == "NameError"
    assert other.sandbox_id != first.sandbox_id


async def test_no_owner_gets_a_fresh_sandbox_each_time(service: LocalSandboxService) -> None:
    first = await run(service, "y = 1", owner=None)
    second = await run(service, "print(y)", owner=None)
    assert second.error is not None
    assert second.error.name == "NameError"
    assert first.sandbox_id != second.sandbox_id
    assert service.sandboxes == []


async def test_restart_gives_a_fresh_sandbox(service: LocalSandboxService) -> None:
    first = await run(service, "z = 1")
    result = await service.execute(fragment("print(z)"), owner="conv-1", restart=True)
    assert isinstance(result, InterpreterResult)
    assert result.error is not None
    assert result.error.name == "NameError"
    assert result.sandbox_id != first.sandbox_id


async def test_runs_on_one_sandbox_are_serialized(service: LocalSandboxService) -> None:
    await run(service, "log = []")
    code = "import time\nlog.append(('start', {n}))\ntime.sleep(0.2)\nlog.append(('end', {n}))"
    await asyncio.gather(*(run(service, code.format(n=n)) for n in range(3)))
    result = await run(
        service,
        "print(len(log)); print(all(log[i][1] == log[i + 1][1] for i in range(0, len(log), 2)))",
    )
    assert result.stdout == ["6\nTrue\n"]


async def test_files_are_written_and_the_entry_file_runs(service: LocalSandboxService) -> None:
    result = await run(
        service,
        "",
        file_path="main.py",
        files=[
            {"file_path": "pkg/helper.py", "file_content": "def twice(x):\n    return 2 * x\n"},
            {
                "file_path": "main.py",
                "file_content": "from pkg.helper import twice\nprint(twice(21))",
            },
        ],
    )
    assert result.error is None, result.error
    assert result.stdout == ["42\n"]


async def test_bad_paths_are_refused(service: LocalSandboxService) -> None:
    for path in ("/etc/passwd", "../escape.py", "a/../../b.py", "bad\x00.py"):
        with pytest.raises(BadRequest):
            await service.execute(
                fragment("", files=[{"file_path": path, "file_content": "x"}]), owner=None
            )
    with pytest.raises(BadRequest):
        await service.execute(fragment("print(1)", file_path="/abs.py"), owner=None)


async def test_unknown_template_is_refused(service: LocalSandboxService) -> None:
    with pytest.raises(BadRequest):
        await service.execute(fragment("print(1)", template="cobol-developer"), owner=None)


async def test_phases_are_reported(service: LocalSandboxService) -> None:
    phases: list[str] = []

    async def on_phase(phase: str) -> None:
        phases.append(phase)

    await service.execute(fragment("1"), owner="p", on_phase=on_phase)
    assert phases == ["acquiring", "starting", "running"]
    phases.clear()
    await service.execute(fragment("1"), owner="p", on_phase=on_phase)
    assert phases == ["acquiring", "running"]


async def test_idle_sandboxes_are_reaped(sandbox_settings: Settings) -> None:
    svc = LocalSandboxService(sandbox_settings.model_copy(update={"sandbox_lifetime_seconds": 0.5}))
    try:
        result = await run(svc, "1")
        uid = svc.sandboxes[0].uid
        for _ in range(50):
            if not svc.sandboxes:
                break
            await asyncio.sleep(0.1)
        assert svc.sandboxes == []
        assert not _processes_of(uid)
        again = await run(svc, "print('new')")
        assert again.sandbox_id != result.sandbox_id
    finally:
        await svc.aclose()


def _processes_of(uid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids is not None and uid in (uids.real, uids.effective):
            found.append(proc)
    return found


async def test_runs_as_a_per_sandbox_non_root_uid(service: LocalSandboxService) -> None:
    result = await run(service, "import os\nprint(os.getuid(), os.geteuid(), os.getgroups())")
    assert result.stdout == ["1000 1000 []\n"]
    sandbox = service.sandbox_for("conv-1")
    assert sandbox is not None
    assert sandbox.uid >= 100_000
    procs = _processes_of(sandbox.uid)
    assert procs, "the kernel should run under the sandbox's host uid"
    names = " ".join(" ".join(p.cmdline()) for p in procs)
    assert "/opt/fragments/kernel.py" in names


async def test_aclose_leaves_no_process_behind(sandbox_settings: Settings) -> None:
    svc = LocalSandboxService(sandbox_settings)
    await run(svc, "import subprocess\nsubprocess.Popen(['sleep', '600'])", owner="a")
    await run(svc, "1", owner="b")
    uids = [s.uid for s in svc.sandboxes]
    roots = [s.root for s in svc.sandboxes]
    assert any("sleep" in p.cmdline() for p in _processes_of(uids[0]))
    await svc.aclose()
    for uid in uids:
        assert not _processes_of(uid)
    for root in roots:
        assert not root.exists()


async def test_plotly_figures_come_back_as_their_json_spec(service: LocalSandboxService) -> None:
    result = await run(
        service, "import plotly.express as px\npx.line(x=[1, 2, 3], y=[1, 3, 2]).show()"
    )
    assert result.error is None, result.error
    [figure] = result.results
    assert isinstance(figure.json_, dict)
    assert figure.json_["data"][0]["type"] == "scatter"
    assert "layout" in figure.json_


async def test_a_cancelled_run_is_interrupted_so_the_next_one_does_not_wait(
    service: LocalSandboxService,
) -> None:
    await run(service, "1")
    task = asyncio.create_task(run(service, "import time\ntime.sleep(30)"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = asyncio.get_running_loop().time()
    result = await run(service, "print('next')")
    assert result.stdout == ["next\n"]
    assert asyncio.get_running_loop().time() - started < 2


async def test_extend_keeps_a_sandbox_past_the_default_lifetime(sandbox_settings: Settings) -> None:
    settings = sandbox_settings.model_copy(
        update={"sandbox_lifetime_seconds": 0.5, "sandbox_max_lifetime_seconds": 60.0}
    )
    svc = LocalSandboxService(settings)
    try:
        kept = await run(svc, "x = 41", owner="kept")
        assert await svc.extend(kept.sandbox_id or "", 10_000) == 60.0
        dropped = await run(svc, "y = 1", owner="dropped")
        assert await svc.extend("no-such-sandbox", 10) is None
        for _ in range(50):
            if svc.sandbox_for("dropped") is None:
                break
            await asyncio.sleep(0.1)
        assert svc.sandbox_for("dropped") is None
        assert svc.preview_expired(dropped.sandbox_id or "")
        again = await run(svc, "print(x + 1)", owner="kept")
        assert again.sandbox_id == kept.sandbox_id
        assert again.stdout == ["42\n"]
    finally:
        await svc.aclose()


async def test_a_failing_launch_is_retried_with_backoff(
    sandbox_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fragments.sandbox.local.kernel import KernelSandbox
    from fragments.sandbox.local.sandbox_base import SandboxStartError
    from fragments.sandbox.service import SandboxUnavailable

    settings = sandbox_settings.model_copy(update={"sandbox_retry_backoff_seconds": 0.01})
    svc = LocalSandboxService(settings)
    attempts: list[str] = []
    real_start = KernelSandbox.start

    async def flaky_start(self: KernelSandbox) -> None:
        attempts.append(self.id)
        if len(attempts) < 3:
            raise SandboxStartError("launcher failed")
        await real_start(self)

    monkeypatch.setattr(KernelSandbox, "start", flaky_start)
    try:
        result = await run(svc, "print('third time')")
        assert result.stdout == ["third time\n"]
        assert len(attempts) == 3

        async def broken_start(self: KernelSandbox) -> None:
            attempts.append(self.id)
            raise SandboxStartError("launcher keeps failing")

        monkeypatch.setattr(KernelSandbox, "start", broken_start)
        attempts.clear()
        with pytest.raises(SandboxUnavailable):
            await run(svc, "1", owner="broken")
        assert len(attempts) == 4  # the first try and three retries
    finally:
        await svc.aclose()


async def test_production_refuses_sandboxes_without_their_protections(
    sandbox_settings: Settings,
) -> None:
    from fragments.sandbox.service import SandboxUnavailable

    as_root = LocalSandboxService(
        sandbox_settings.model_copy(update={"env": "production", "sandbox_uid_base": 0})
    )
    try:
        with pytest.raises(SandboxUnavailable, match="non-system uid"):
            await as_root.check()
    finally:
        await as_root.aclose()
    confined = LocalSandboxService(sandbox_settings.model_copy(update={"env": "production"}))
    try:
        await confined.check()  # every protection is available on this machine
    finally:
        await confined.aclose()
