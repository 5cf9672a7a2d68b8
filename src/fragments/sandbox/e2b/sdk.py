"""The part of the `e2b-code-interpreter` SDK's async API this backend uses, as protocols.

The backend takes the SDK class by injection (the real `AsyncSandbox` by default, an in-process
double in tests), so these protocols are the whole contract between the two. Names and
signatures follow the installed SDK (`e2b_code_interpreter.AsyncSandbox`, `e2b` 2.x).
"""

# The SDK's methods take `timeout` arguments (seconds E2B enforces, not asyncio deadlines).
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, cast


class OutputMessage(Protocol):
    """A chunk of a cell's stdout or stderr as it streams (`e2b_code_interpreter.OutputMessage`)."""

    line: str


class CellResult(Protocol):
    """One display output of a cell (`e2b_code_interpreter.Result`)."""

    text: str | None
    html: str | None
    markdown: str | None
    svg: str | None
    png: str | None
    jpeg: str | None
    json: Any
    is_main_result: bool


class CellError(Protocol):
    """The error a cell raised (`e2b_code_interpreter.ExecutionError`); traceback is one string."""

    name: str
    value: str
    traceback: str


class CellLogs(Protocol):
    stdout: list[str]
    stderr: list[str]


class Execution(Protocol):
    """What `run_code` returns (`e2b_code_interpreter.Execution`)."""

    results: Sequence[CellResult]
    logs: CellLogs
    error: CellError | None


class CommandResult(Protocol):
    """What a finished `commands.run` returns; a non-zero exit raises `CommandExitException`."""

    stdout: str
    stderr: str
    exit_code: int


class Files(Protocol):
    async def write(self, path: str, data: str | bytes) -> object: ...


class Commands(Protocol):
    async def run(
        self, cmd: str, *, cwd: str | None = None, timeout: float | None = 60
    ) -> CommandResult: ...


class SandboxInfo(Protocol):
    """One entry of `AsyncSandbox.list` (`e2b.SandboxInfo`)."""

    sandbox_id: str
    metadata: dict[str, str]
    # When E2B will kill it (timezone-aware).
    end_at: datetime


class Paginator(Protocol):
    @property
    def has_next(self) -> bool: ...

    async def next_items(self) -> list[SandboxInfo]: ...


StreamHandler = Callable[[OutputMessage], Awaitable[None] | None]


class Sandbox(Protocol):
    """A live E2B sandbox (an `AsyncSandbox` instance)."""

    @property
    def sandbox_id(self) -> str: ...

    @property
    def files(self) -> Files: ...

    @property
    def commands(self) -> Commands: ...

    def get_host(self, port: int) -> str: ...

    async def run_code(
        self,
        code: str,
        *,
        on_stdout: StreamHandler | None = None,
        on_stderr: StreamHandler | None = None,
        timeout: float | None = None,
    ) -> Execution: ...

    async def set_timeout(self, timeout: int) -> None: ...

    async def kill(self) -> bool: ...


class SandboxSDK(Protocol):
    """The `AsyncSandbox` class itself: its class-level constructors and queries."""

    async def create(
        self,
        template: str | None = None,
        timeout: int | None = None,
        metadata: dict[str, str] | None = None,
        *,
        api_key: str | None = None,
        domain: str | None = None,
    ) -> Sandbox: ...

    async def connect(
        self,
        sandbox_id: str,
        timeout: int | None = None,
        *,
        api_key: str | None = None,
        domain: str | None = None,
    ) -> Sandbox: ...

    def list(
        self,
        query: Any = None,
        limit: int | None = None,
        *,
        api_key: str | None = None,
        domain: str | None = None,
    ) -> Paginator: ...


def real_sdk() -> SandboxSDK:
    """The SDK's `AsyncSandbox`, imported only when the E2B backend is used (it is heavy)."""
    from e2b_code_interpreter import AsyncSandbox  # type: ignore[import-untyped]

    return cast(SandboxSDK, AsyncSandbox)
