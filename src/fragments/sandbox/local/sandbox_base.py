"""What kernel and web sandboxes share: their settings, identity and folders, the confined
process they run (bubblewrap under the sandbox's caps, seccomp passed by fd), and its teardown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fragments.sandbox.local.build import TemplateEnv
from fragments.sandbox.local.confine import Confinement, bwrap_command
from fragments.sandbox.local.egress import SandboxEgress
from fragments.sandbox.local.limits import Caps, Limits, Usage, create_limits

# Unix socket paths must fit in sockaddr_un (108 bytes with the NUL).
MAX_SOCKET_PATH = 100


class SandboxStartError(Exception):
    """The sandbox did not come up; the message says why.

    `app_failed` marks a failure of the fragment's own code (a web app that exits while
    starting): retrying cannot help, unlike a sandbox that failed to launch or answer.
    """

    def __init__(self, message: str, *, app_failed: bool = False) -> None:
        super().__init__(message)
        self.app_failed = app_failed


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """The settings a sandbox needs (a subset of Settings, resolved once)."""

    run_root: Path
    etc: Path
    uid_base: int
    caps: Caps
    limits_backend: str
    seccomp: Path | None
    start_timeout: float
    run_timeout: float
    interrupt_grace: float
    output_cap: int
    boot_script: Path
    # Running code's way out (FRAGMENTS_SANDBOX_EGRESS=internet), or None: no network.
    egress: SandboxEgress | None = None


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children before grandchildren)."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop(0)
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            queue.extend(children)
    return found


async def kill_sandbox_processes(
    proc: asyncio.subprocess.Process | None,
    limits: Limits | None,
    drain: asyncio.Task[None] | None,
) -> None:
    """Kill a sandbox's process tree, then whatever its cgroup still holds, then its log drain."""
    if proc is not None and proc.returncode is None:
        # Kill what runs under our child (bwrap) first, so that bwrap reaps it and exits:
        # killing bwrap first would leave its child a zombie for the machine's init.
        for pid in _descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
    if limits is not None:
        await asyncio.to_thread(limits.kill_all)
    if drain is not None:
        drain.cancel()
        with contextlib.suppress(BaseException):
            await drain


class ConfinedSandbox:
    """One sandbox: a uid of its own (slot n runs as uid_base + n), a folder under the run root
    with its workspace (`home`) and packages (`deps`), caps, and one confined process tree."""

    def __init__(
        self,
        *,
        sandbox_id: str,
        owner: str | None,
        slot: int,
        env: TemplateEnv,
        config: KernelConfig,
    ) -> None:
        self.id = sandbox_id
        self.owner = owner
        self.slot = slot
        self.uid = config.uid_base + slot
        self.env = env
        self.config = config
        self.lock = asyncio.Lock()
        self.last_used = time.monotonic()
        self.closed = False
        self.root = config.run_root / sandbox_id
        self.home = self.root / "home"
        self.deps = self.root / "deps"
        self.starts = 0
        # Data files written into the workspace: name -> content digest (see unwritten_data).
        self.data_digests: dict[str, str] = {}
        self._limits: Limits | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self._log_tail = bytearray()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def _make_dirs(self, private: tuple[Path, ...]) -> None:
        """The sandbox's folder, its private folders (the sandbox uid's) and `deps`."""
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        for path in private:
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, self.uid, self.uid)
            path.chmod(0o700)
        # Never the sandbox's: only the installer writes packages there.
        self.deps.mkdir(mode=0o755, exist_ok=True)

    def _usage(self) -> Usage:
        return self._limits.usage() if self._limits is not None else Usage()

    async def _launch(
        self, confinement: Callable[[int | None], Confinement], inner: list[str]
    ) -> float:
        """Start `inner` confined (the confinement is built around the seccomp fd, if any) under
        the sandbox's caps, draining its output; the start time, for the log."""
        if self._limits is None:
            self._limits = create_limits(
                f"{self.config.run_root.name}-{self.id}",
                self.config.caps,
                self.config.limits_backend,
            )
        seccomp_fd: int | None = None
        if self.config.seccomp is not None:
            seccomp_fd = os.open(self.config.seccomp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            command = self._limits.wrap_command(bwrap_command(confinement(seccomp_fd), inner))
            started = time.monotonic()
            self._proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=() if seccomp_fd is None else (seccomp_fd,),
                start_new_session=True,
            )
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        self._log_tail.clear()
        self._drain = asyncio.create_task(self._drain_output(self._proc))
        return started

    async def _drain_output(self, proc: asyncio.subprocess.Process) -> None:
        # The process's own stdout/stderr (start-up errors); keep only a tail, never unbounded.
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            self._log_tail += chunk
            del self._log_tail[:-4096]

    async def stop(self) -> None:
        """Kill the sandbox's processes; the workspace stays."""
        proc, self._proc = self._proc, None
        drain, self._drain = self._drain, None
        await kill_sandbox_processes(proc, self._limits, drain)

    def _release_folders(self) -> None:
        """Undo what the subclass mounted in the sandbox's folder (before it is deleted)."""

    async def close(self) -> None:
        """Stop, remove the caps and delete the sandbox's folders."""
        self.closed = True
        await self.stop()
        limits, self._limits = self._limits, None
        if limits is not None:
            await asyncio.to_thread(limits.remove)
        await asyncio.to_thread(self._release_folders)
        await asyncio.to_thread(shutil.rmtree, self.root, True)
