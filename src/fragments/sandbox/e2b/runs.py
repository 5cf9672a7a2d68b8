"""One run in an E2B sandbox: install what is missing, write the files, then run the cell
(interpreter) or leave the template's dev server to reload the app (web)."""

from __future__ import annotations

import contextlib
from pathlib import PurePosixPath

from e2b import SandboxUnreachableException, TimeoutException

from fragments.config import Settings
from fragments.sandbox.e2b.install import WORKDIR, install_packages
from fragments.sandbox.e2b.results import CellOutput
from fragments.sandbox.e2b.sandboxes import E2BSandbox, is_gone
from fragments.sandbox.service import PhaseCallback, Program
from fragments.schemas import ExecutionError, InterpreterResult, WebResult


def _timed_out(exc: Exception) -> bool:
    return isinstance(exc, TimeoutException) and not isinstance(exc, SandboxUnreachableException)


def failure(exc: Exception, settings: Settings) -> ExecutionError:
    """What the user is told when the sandbox failed under a run."""
    if is_gone(exc):
        return ExecutionError(
            name="SandboxError",
            value=(
                "The E2B sandbox stopped during the run (it was killed or reached its timeout); "
                "run again for a new one, variables from earlier runs are gone."
            ),
        )
    if _timed_out(exc):
        return ExecutionError(
            name="TimeoutError",
            value=(
                f"Execution stopped after {settings.sandbox_run_timeout_seconds:g} s, the time "
                "limit for one run; the sandbox was replaced, so variables from earlier runs "
                "are gone."
            ),
        )
    reason = str(exc).split("\n", 1)[0][:300]
    return ExecutionError(
        name="SandboxError", value=f"The E2B sandbox could not be reached: {reason}"
    )


async def _install(
    sandbox: E2BSandbox, program: Program, settings: Settings, phase: PhaseCallback
) -> ExecutionError | None:
    """Install the program's packages this sandbox lacks; the installer's error, if any."""
    missing = [d for d in program.dependencies if d not in sandbox.installed]
    if not missing:
        return None
    await phase("installing")
    error = await install_packages(
        sandbox.sdk, missing, program.template.language, settings.sandbox_install_timeout_seconds
    )
    if error is None:
        sandbox.installed.update(missing)
    return error


async def _write(sandbox: E2BSandbox, files: list[tuple[str, str | bytes]]) -> None:
    for path, content in files:
        # Paths were checked by prepare_program: relative, inside the workspace.
        await sandbox.sdk.files.write(str(PurePosixPath(WORKDIR, path)), content)


async def run_cell(
    sandbox: E2BSandbox, program: Program, settings: Settings, phase: PhaseCallback
) -> InterpreterResult:
    """Run the program as a cell; a failure midway keeps what it printed, with the error."""
    template_id = program.template.id
    output = CellOutput(settings.sandbox_output_cap_bytes)
    try:
        error = await _install(sandbox, program, settings, phase)
        if error is not None:
            return InterpreterResult(sandbox_id=sandbox.id, template=template_id, error=error)
        await phase("running")
        if program.files or program.data:
            await _write(sandbox, [*program.files, *program.data])
        execution = await sandbox.sdk.run_code(
            program.code,
            on_stdout=output.on_stdout,
            on_stderr=output.on_stderr,
            timeout=settings.sandbox_run_timeout_seconds,
        )
    except Exception as exc:  # the SDK's and its HTTP client's: all end the run, none the app
        output.fail(failure(exc, settings))
        if _timed_out(exc) and not is_gone(exc):
            # E2B's kernel may still be running the cell, and would hold up the next one: the
            # sandbox goes (the next run finds it gone and creates another), as a local kernel
            # that does not stop is restarted.
            with contextlib.suppress(Exception):
                await sandbox.sdk.kill()
        return output.result(sandbox.id, template_id)
    output.add_execution(execution, streamed=True)
    return output.result(sandbox.id, template_id)


async def serve_app(
    sandbox: E2BSandbox, program: Program, settings: Settings, phase: PhaseCallback
) -> WebResult:
    """Install, then write the app; E2B's template runs the dev server, which reloads it."""
    template = program.template
    try:
        error = await _install(sandbox, program, settings, phase)
        if error is None:
            await phase("running")
            files = list(program.files) or [(program.entry, program.code)]
            await _write(sandbox, [*files, *program.data])
    except Exception as exc:
        error = failure(exc, settings)
    if error is not None:
        return WebResult(sandbox_id=sandbox.id, template=template.id, url=None, error=error)
    # Every web template has a port (the registry says so); 80 is E2B's own default.
    host = sandbox.sdk.get_host(template.port or 80)
    return WebResult(sandbox_id=sandbox.id, template=template.id, url=f"https://{host}")
