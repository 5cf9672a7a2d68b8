"""An in-process double of the `e2b-code-interpreter` SDK's async surface, for tests.

E2B cannot be reached from the test machines, so the E2B backend is tested against this: a class
with the same async methods as `e2b_code_interpreter.AsyncSandbox` that really does the work and
answers with the SDK's own types (Execution, Result, Logs, ExecutionError, OutputMessage,
CommandResult, CommandExitException, SandboxInfo, WriteInfo and the SDK's exceptions):

- each sandbox gets a home folder under a temporary directory; `files.write` writes there;
- `run_code` runs the cell in a real Python process kept per sandbox (variables survive between
  cells), which prints its output as JSON lines in E2B's own wire format; the lines are parsed by
  the SDK's own parser, so stdout/stderr stream to the handlers, and the last expression and
  `display(...)` calls become Results with the formats their `_repr_*_` methods give;
- `commands.run` records every command; pip and npm installs succeed unless a package is listed
  in `FakeCloud.broken_packages` (then CommandExitException with the installer's message);
  anything else exits 127;
- a sandbox dies when its timeout runs out (on the cloud's clock, which tests advance) or when
  killed; E2B's 24 h limit is enforced; creates are counted, and the next N can be made to fail.

Test code is trusted: this is a test double, not a sandbox.
"""

# The SDK's methods take `timeout` arguments (seconds E2B enforces, not asyncio deadlines).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from e2b import (
    AuthenticationException,
    CommandExitException,
    CommandResult,
    FileType,
    InvalidArgumentException,
    SandboxException,
    SandboxInfo,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
    TemplateException,
    TimeoutException,
    WriteInfo,
)
from e2b_code_interpreter.models import Execution, async_parse_output

# The most E2B keeps a sandbox alive (Pro tier): longer timeouts are refused.
MAX_TIMEOUT = 86_400
HOME = PurePosixPath("/home/user")
TEMPLATES = frozenset(
    {
        "code-interpreter-v1",
        "nextjs-developer",
        "vue-developer",
        "streamlit-developer",
        "gradio-developer",
    }
)

# The kernel stand-in: one cell per stdin line, E2B's JSON event lines on stdout.
_WORKER = r"""
import ast, base64, json, sys, time, traceback

out = sys.__stdout__
ns = {"__name__": "__main__"}


def emit(event):
    event.setdefault("timestamp", time.time_ns())
    out.write(json.dumps(event) + "\n")
    out.flush()


class Stream:
    # Line-buffered, as a kernel's streams reach E2B: print's text and newline are one chunk.
    def __init__(self, name):
        self.name = name
        self.buffer = ""

    def write(self, text):
        self.buffer += text
        cut = self.buffer.rfind("\n") + 1
        if cut:
            emit({"type": self.name, "text": self.buffer[:cut]})
            self.buffer = self.buffer[cut:]
        return len(text)

    def flush(self):
        if self.buffer:
            emit({"type": self.name, "text": self.buffer})
            self.buffer = ""


FORMATS = (
    ("_repr_png_", "png"), ("_repr_jpeg_", "jpeg"), ("_repr_svg_", "svg"),
    ("_repr_html_", "html"), ("_repr_markdown_", "markdown"), ("_repr_json_", "json"),
)


def result(obj, main):
    event = {"type": "result", "text": repr(obj), "is_main_result": main}
    for method, key in FORMATS:
        if hasattr(obj, method):
            value = getattr(obj, method)()
            if isinstance(value, bytes):
                value = base64.b64encode(value).decode()
            if value is not None:
                event[key] = value
    emit(event)


ns["display"] = lambda obj: result(obj, False)
sys.stdout, sys.stderr = Stream("stdout"), Stream("stderr")

for line in sys.stdin:
    code = json.loads(line)["code"]
    try:
        tree = ast.parse(code)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), ns)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), ns)
            if value is not None:
                result(value, True)
    except BaseException as exc:
        emit({
            "type": "error",
            "name": type(exc).__name__,
            "value": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
        })
    sys.stdout.flush()
    sys.stderr.flush()
    emit({"type": "end"})
"""


@dataclass(eq=False)
class FakeSandboxState:
    """One sandbox in the fake cloud."""

    sandbox_id: str
    template: str
    metadata: dict[str, str]
    home: Path
    started_at: datetime
    expires_at: float
    timeouts: list[int] = field(default_factory=list)
    commands: list[tuple[str, str | None]] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    alive: bool = True
    worker: asyncio.subprocess.Process | None = None
    # The kernel runs one cell at a time, whichever connection (app instance) sent it, and
    # answers each on its own stream, as E2B's kernel does: cells from two connections queue.
    cell_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def stop_worker(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None and worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
            await worker.wait()


class FakeCloud:
    """The fake E2B service: its sandboxes, its clock and the knobs tests turn."""

    def __init__(self, root: Path, api_key: str = "e2b_test_key") -> None:
        self.root = root
        self.api_key = api_key
        self.sandboxes: dict[str, FakeSandboxState] = {}
        self.creates = 0
        self.fail_creates = 0
        # Seconds a create takes (E2B takes about one): lets concurrent creates overlap.
        self.create_delay = 0.0
        self.broken_packages: set[str] = set()
        self.domains: list[str | None] = []
        self._offset = 0.0

    # ---- the knobs ---------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the cloud's clock: sandboxes whose timeout has run out are dead from now on."""
        self._offset += seconds

    @property
    def sdk(self) -> type[FakeAsyncSandbox]:
        """The class to inject where the backend expects `AsyncSandbox`."""
        return type("FakeAsyncSandbox", (FakeAsyncSandbox,), {"cloud": self})

    def live(self) -> list[FakeSandboxState]:
        return [s for s in self.sandboxes.values() if self._alive(s)]

    @property
    def commands(self) -> list[str]:
        return [cmd for s in self.sandboxes.values() for cmd, _ in s.commands]

    async def aclose(self) -> None:
        for state in self.sandboxes.values():
            await state.stop_worker()

    # ---- what the SDK class calls ------------------------------------------------------------

    def _check_key(self, api_key: str | None) -> None:
        if api_key != self.api_key:
            raise AuthenticationException("Invalid API key")

    def _alive(self, state: FakeSandboxState) -> bool:
        if state.alive and self.now() >= state.expires_at:
            state.alive = False
        return state.alive

    def state(self, sandbox_id: str) -> FakeSandboxState:
        state = self.sandboxes.get(sandbox_id)
        if state is None or not self._alive(state):
            raise SandboxNotFoundException(f"Sandbox {sandbox_id} not found")
        return state

    def running(self, sandbox_id: str) -> FakeSandboxState:
        """The state for an envd call: a dead sandbox answers as E2B's proxy does."""
        state = self.sandboxes.get(sandbox_id)
        if state is None or not self._alive(state):
            raise TimeoutException(
                "The sandbox was killed while the request was in progress. This can happen "
                "when the sandbox times out or is killed manually."
            )
        return state

    def create(self, template: str, timeout: int, metadata: dict[str, str]) -> FakeSandboxState:
        self.creates += 1
        if self.fail_creates > 0:
            self.fail_creates -= 1
            raise SandboxException("503: the service is busy, try again")
        if template not in TEMPLATES:
            raise TemplateException(f"Template {template} not found")
        if not 0 < timeout <= MAX_TIMEOUT:
            raise InvalidArgumentException(f"timeout {timeout} is out of range")
        sandbox_id = "i" + secrets.token_hex(9)
        home = self.root / sandbox_id / "home" / "user"
        home.mkdir(parents=True)
        state = FakeSandboxState(
            sandbox_id=sandbox_id,
            template=template,
            metadata=dict(metadata),
            home=home,
            started_at=datetime.now(UTC),
            expires_at=self.now() + timeout,
            timeouts=[timeout],
        )
        self.sandboxes[sandbox_id] = state
        return state

    def info(self, state: FakeSandboxState) -> SandboxInfo:
        left = max(0.0, state.expires_at - self.now())
        return SandboxInfo(
            sandbox_id=state.sandbox_id,
            sandbox_domain=None,
            template_id=state.template,
            name=state.template,
            metadata=dict(state.metadata),
            started_at=state.started_at,
            end_at=datetime.now(UTC) + timedelta(seconds=left),
            state=SandboxState.RUNNING,
            cpu_count=2,
            memory_mb=512,
            envd_version="0.2.0",
        )


class FakeFiles:
    def __init__(self, sandbox: FakeAsyncSandbox) -> None:
        self._sandbox = sandbox

    async def write(self, path: str, data: str | bytes, **_: Any) -> WriteInfo:
        state = self._sandbox.state()
        target = PurePosixPath(path) if path.startswith("/") else HOME / path
        if ".." in target.parts or not target.is_relative_to(HOME):
            raise InvalidArgumentException(f"{path} is outside {HOME} in this fake")
        local = state.home.joinpath(*target.relative_to(HOME).parts)
        local.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            local.write_bytes(data)
        else:
            local.write_text(data)
        return WriteInfo(name=target.name, type=FileType.FILE, path=str(target))


class FakeCommands:
    def __init__(self, sandbox: FakeAsyncSandbox) -> None:
        self._sandbox = sandbox

    async def run(
        self,
        cmd: str,
        background: bool | None = None,
        envs: dict[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = 60,
        **_: Any,
    ) -> CommandResult[str]:
        state = self._sandbox.state()
        state.commands.append((cmd, cwd))
        argv = shlex.split(cmd)
        if argv[:2] not in (["pip", "install"], ["npm", "install"]):
            raise CommandExitException(
                stdout="", stderr=f"bash: {argv[0]}: command not found", exit_code=127, error=None
            )
        packages = [a for a in argv[2:] if not a.startswith("-")]
        broken = [p for p in packages if p in self._sandbox.cloud.broken_packages]
        if broken:
            message = (
                f"ERROR: Could not find a version that satisfies the requirement {broken[0]}\n"
                f"ERROR: No matching distribution found for {broken[0]}"
            )
            raise CommandExitException(stdout="", stderr=message, exit_code=1, error=None)
        return CommandResult(
            stdout=f"Successfully installed {' '.join(packages)}\n",
            stderr="",
            exit_code=0,
            error=None,
        )


class FakeAsyncSandbox:
    """Stands in for `e2b_code_interpreter.AsyncSandbox`; get a class bound to a cloud from
    `FakeCloud.sdk`."""

    cloud: ClassVar[FakeCloud]

    def __init__(self, sandbox_id: str, domain: str | None) -> None:
        self._id = sandbox_id
        self._domain = domain or "e2b.app"
        self._files = FakeFiles(self)
        self._commands = FakeCommands(self)

    # ---- class-level API ---------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        template: str | None = None,
        timeout: int | None = None,
        metadata: dict[str, str] | None = None,
        *,
        api_key: str | None = None,
        domain: str | None = None,
        **_: Any,
    ) -> FakeAsyncSandbox:
        cls.cloud._check_key(api_key)
        cls.cloud.domains.append(domain)
        if cls.cloud.create_delay:
            await asyncio.sleep(cls.cloud.create_delay)
        state = cls.cloud.create(template or "code-interpreter-v1", timeout or 300, metadata or {})
        return cls(state.sandbox_id, domain)

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        timeout: int | None = None,
        *,
        api_key: str | None = None,
        domain: str | None = None,
        **_: Any,
    ) -> FakeAsyncSandbox:
        cls.cloud._check_key(api_key)
        state = cls.cloud.state(sandbox_id)
        if timeout is not None:
            # As E2B documents: connecting only ever lengthens a running sandbox's timeout.
            state.expires_at = max(state.expires_at, cls.cloud.now() + timeout)
        return cls(sandbox_id, domain)

    @classmethod
    def list(
        cls,
        query: SandboxQuery | None = None,
        limit: int | None = None,
        *,
        api_key: str | None = None,
        domain: str | None = None,
        **_: Any,
    ) -> FakePaginator:
        cls.cloud._check_key(api_key)
        found = []
        for state in cls.cloud.live():
            wanted = (query.metadata if query else None) or {}
            if all(state.metadata.get(k) == v for k, v in wanted.items()):
                found.append(cls.cloud.info(state))
        return FakePaginator(found[: limit or None])

    # ---- instance API ------------------------------------------------------------------------

    def state(self) -> FakeSandboxState:
        return self.cloud.running(self._id)

    @property
    def sandbox_id(self) -> str:
        return self._id

    @property
    def files(self) -> FakeFiles:
        return self._files

    @property
    def commands(self) -> FakeCommands:
        return self._commands

    def get_host(self, port: int) -> str:
        return f"{port}-{self._id}.{self._domain}"

    async def set_timeout(self, timeout: int, **_: Any) -> None:
        state = self.cloud.state(self._id)
        if not 0 < timeout <= MAX_TIMEOUT:
            raise InvalidArgumentException(f"timeout {timeout} is out of range (max 24 h)")
        state.timeouts.append(timeout)
        state.expires_at = self.cloud.now() + timeout

    async def kill(self, **_: Any) -> bool:
        state = self.cloud.sandboxes.get(self._id)
        if state is None or not self.cloud._alive(state):
            return False
        state.alive = False
        await state.stop_worker()
        shutil.rmtree(state.home, ignore_errors=True)
        return True

    async def is_running(self, **_: Any) -> bool:
        state = self.cloud.sandboxes.get(self._id)
        return state is not None and self.cloud._alive(state)

    async def run_code(
        self,
        code: str,
        language: str | None = None,
        context: object | None = None,
        on_stdout: Any = None,
        on_stderr: Any = None,
        on_result: Any = None,
        on_error: Any = None,
        envs: dict[str, str] | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> Execution:
        state = self.state()
        async with state.cell_lock:
            return await self._run_cell(
                state, code, on_stdout, on_stderr, on_result, on_error, timeout
            )

    async def _run_cell(
        self,
        state: FakeSandboxState,
        code: str,
        on_stdout: Any,
        on_stderr: Any,
        on_result: Any,
        on_error: Any,
        timeout: float | None,
    ) -> Execution:
        state.cells.append(code)
        if state.worker is None or state.worker.returncode is not None:
            state.worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-u",
                "-c",
                _WORKER,
                cwd=state.home,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                limit=16 * 1024 * 1024,
            )
        worker = state.worker
        assert worker.stdin is not None
        assert worker.stdout is not None
        worker.stdin.write((json.dumps({"code": code}) + "\n").encode())
        await worker.stdin.drain()
        execution = Execution()
        handlers = {
            "on_stdout": on_stdout,
            "on_stderr": on_stderr,
            "on_result": on_result,
            "on_error": on_error,
        }

        async def read() -> None:
            assert worker.stdout is not None
            while True:
                line = await worker.stdout.readline()
                if not line:
                    # The process died mid-cell: E2B reports this as the sandbox being killed.
                    state.alive = False
                    self.cloud.running(self._id)
                text = line.decode()
                try:
                    event = json.loads(text)
                except json.JSONDecodeError:
                    # Raw output of a child process that wrote to fd 1 directly.
                    event = {"type": "stdout", "text": text, "timestamp": time.time_ns()}
                if event.get("type") == "end":
                    return
                await async_parse_output(execution, json.dumps(event), **handlers)

        try:
            await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            await state.stop_worker()  # the kernel is stopped, so its variables are gone
            raise TimeoutException(
                "Execution timed out — the 'timeout' option can be used to increase this timeout"
            ) from None
        return execution


class FakePaginator:
    def __init__(self, items: list[SandboxInfo]) -> None:
        self._items = items
        self.has_next = True

    async def next_items(self, **_: Any) -> list[SandboxInfo]:
        if not self.has_next:
            raise Exception("No more items to fetch")
        self.has_next = False
        return self._items
