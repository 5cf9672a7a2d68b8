"""Runs in local sandboxes: starting one (launch failures retried with backoff), a fragment's
run in an interpreter, and the start a prepared sandbox gets before its fragment exists."""

from __future__ import annotations

import time
from typing import Protocol

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from fragments.config import Settings
from fragments.sandbox.local.kernel import KernelSandbox
from fragments.sandbox.local.registry import Sandbox
from fragments.sandbox.local.sandbox_base import SandboxStartError
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.service import (
    PhaseCallback,
    Program,
    SandboxUnavailable,
    unwritten_data,
)
from fragments.schemas import ExecutionError, InterpreterResult

log = structlog.get_logger(__name__)


class SandboxHooks(Protocol):
    """What a run needs from the service that owns the sandboxes."""

    async def start_sandbox(self, sandbox: Sandbox) -> None: ...

    async def install_extras(
        self, sandbox: Sandbox, program: Program, phase: PhaseCallback
    ) -> ExecutionError | None: ...

    async def discard(self, sandbox: Sandbox) -> None: ...

    async def serve_placeholder(self, sandbox: WebSandbox) -> None: ...


def check_open(sandbox: Sandbox, waiting: str) -> None:
    """A sandbox reaped or evicted while its caller waited for its lock cannot be used."""
    if sandbox.closed:
        raise SandboxUnavailable(
            f"The sandbox was closed while {waiting}; please try again.",
            headers={"Retry-After": "1"},
        )


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, SandboxStartError) and not exc.app_failed


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("sandbox_start_retry", attempt=state.attempt_number, error=str(error)[:300])


async def start_with_retries(sandbox: Sandbox, settings: Settings) -> None:
    """Start a sandbox, retrying launch failures (not the app's own) with backoff."""
    backoff = settings.sandbox_retry_backoff_seconds
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(settings.sandbox_start_retries + 1),
        wait=wait_exponential(multiplier=backoff, min=backoff, max=4 * backoff),
        retry=retry_if_exception(_retryable),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            await sandbox.start()


async def run_in_kernel(
    sandbox: KernelSandbox, program: Program, phase: PhaseCallback, hooks: SandboxHooks
) -> InterpreterResult:
    """Run the program in an interpreter sandbox: started if needed, packages, files, cell."""
    async with sandbox.lock:
        check_open(sandbox, "the run waited")
        if not sandbox.alive:
            await phase("starting")
            try:
                await hooks.start_sandbox(sandbox)
            except SandboxStartError as exc:
                log.error("sandbox_start_failed", sandbox_id=sandbox.id, error=str(exc))
                raise SandboxUnavailable(
                    f"The sandbox could not start: {exc}", headers={"Retry-After": "5"}
                ) from exc
        error = await hooks.install_extras(sandbox, program, phase)
        if error is not None:
            return InterpreterResult(
                sandbox_id=sandbox.id, template=program.template.id, error=error
            )
        await phase("running")
        files: list[tuple[str, str | bytes]] = [
            *program.files,
            *unwritten_data(program, sandbox.data_digests),
        ]
        if files:
            error = await sandbox.write_files(files)
            if error is not None:
                sandbox.data_digests.clear()  # written or not: written again next run
                return InterpreterResult(
                    sandbox_id=sandbox.id, template=program.template.id, error=error
                )
            if not sandbox.alive:
                await sandbox.start()
        return await sandbox.run(program.code)


async def start_prepared(sandbox: Sandbox, hooks: SandboxHooks) -> None:
    """Make a prepared sandbox ready without fragment code: a web sandbox serves its template's
    placeholder, an interpreter's kernel is started; one already live is waited for."""
    async with sandbox.lock:
        check_open(sandbox, "it was prepared")
        if not sandbox.alive:
            try:
                if isinstance(sandbox, WebSandbox):
                    await hooks.serve_placeholder(sandbox)
                else:
                    await hooks.start_sandbox(sandbox)
            except SandboxStartError as exc:
                log.warning("sandbox_prepare_failed", sandbox_id=sandbox.id)
                await hooks.discard(sandbox)
                raise SandboxUnavailable(
                    f"The sandbox could not start: {exc}", headers={"Retry-After": "5"}
                ) from exc
        elif isinstance(sandbox, WebSandbox) and not sandbox.serving:
            await sandbox.wait_ready()
        sandbox.last_used = time.monotonic()
