"""Resource caps for one sandbox: memory, process count and CPU.

cgroups v1 (separate memory, pids and cpu hierarchies, as on the machines we run on today) or
cgroups v2 (one tree with the controllers enabled) when available; otherwise rlimits, which
are per-process (memory) or per-uid (processes; every sandbox has its own uid, so that works).

A process joins the cgroups before it executes anything of the sandbox's: `wrap_command`
prefixes the launch with a tiny shell that writes its own pid into each `cgroup.procs` and
then `exec`s the rest, so even the first fork lands inside.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_GROUP = "fragments"
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'


@dataclass(frozen=True, slots=True)
class Caps:
    memory_bytes: int
    max_processes: int
    cpus: float


@dataclass(slots=True)
class Usage:
    """Counters read before and after a run, to tell why a kernel died."""

    oom_kills: int = 0
    process_limit_hits: int = 0


class Limits(Protocol):
    """What the sandbox needs from a limits backend."""

    name: str

    def wrap_command(self, command: list[str]) -> list[str]:
        """The command, prefixed so that its process starts under the caps."""
        ...

    def usage(self) -> Usage: ...

    def kill_all(self) -> None:
        """SIGKILL every process under the caps (no-op where we cannot enumerate them)."""
        ...

    def remove(self) -> None:
        """Kill what is left and release the caps' kernel objects."""
        ...


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _read_key(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _kill_procs(procs_files: list[Path]) -> None:
    # Several passes: a process may fork between our read and our kill (pids caps bound this).
    for _ in range(20):
        pids: set[int] = set()
        for procs in procs_files:
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _rmdir(path: Path) -> None:
    # A cgroup can only be removed once its last process is reaped; give it a moment.
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
    log.warning("cgroup_not_removed", path=str(path))


def _rlimit_prefix(caps: Caps, *, memory: bool, processes: bool, slack: int = 0) -> list[str]:
    # No core dumps; no single file larger than the memory cap (Python sees EFBIG). The
    # workspace as a whole is not capped: that needs filesystem quotas.
    args = ["prlimit", "--core=0", f"--fsize={caps.memory_bytes}"]
    if processes:
        # With a pids cgroup, RLIMIT_NPROC sits a little above it so the cgroup trips first
        # (its counter tells a fork bomb apart from other deaths).
        args.append(f"--nproc={caps.max_processes + slack}")
    if memory:
        # Address space, not resident memory: a blunt fallback, fine for the Python kernel.
        args.append(f"--as={caps.memory_bytes}")
    return [*args, "--"]


class CgroupV1Limits:
    """One cgroup per sandbox in each of the memory, pids and cpu hierarchies."""

    name = "cgroup-v1"

    def __init__(self, sandbox_id: str, caps: Caps, root: Path = CGROUP_ROOT) -> None:
        self.caps = caps
        self.memory = root / "memory" / _GROUP / sandbox_id
        self.pids = root / "pids" / _GROUP / sandbox_id
        self.cpu = root / "cpu" / _GROUP / sandbox_id
        for path in (self.memory, self.pids, self.cpu):
            path.mkdir(parents=True, exist_ok=True)
        _write(self.memory / "memory.limit_in_bytes", str(caps.memory_bytes))
        memsw = self.memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            # Swap would let a sandbox outgrow its cap; memsw must not be below the limit.
            with contextlib.suppress(OSError):
                _write(memsw, str(caps.memory_bytes))
        with contextlib.suppress(OSError):
            _write(self.memory / "memory.swappiness", "0")
        _write(self.pids / "pids.max", str(caps.max_processes))
        period = 100_000
        _write(self.cpu / "cpu.cfs_period_us", str(period))
        _write(self.cpu / "cpu.cfs_quota_us", str(max(1000, int(caps.cpus * period))))

    @staticmethod
    def available(root: Path = CGROUP_ROOT) -> bool:
        return all(
            (root / ctl / f).exists()
            for ctl, f in (
                ("memory", "memory.limit_in_bytes"),
                ("pids", "cgroup.procs"),
                ("cpu", "cpu.cfs_quota_us"),
            )
        ) and os.access(root / "memory", os.W_OK)

    def _procs(self) -> list[Path]:
        return [self.memory / "cgroup.procs", self.pids / "cgroup.procs", self.cpu / "cgroup.procs"]

    def wrap_command(self, command: list[str]) -> list[str]:
        procs = [str(p) for p in self._procs()]
        # RLIMIT_NPROC as well: cheap, and it still holds if a process escapes the pids cgroup.
        rlimits = _rlimit_prefix(self.caps, memory=False, processes=True, slack=32)
        return ["/bin/sh", "-c", _JOIN, "sh", *procs, "--", *rlimits, *command]

    def usage(self) -> Usage:
        return Usage(
            oom_kills=_read_key(self.memory / "memory.oom_control", "oom_kill"),
            process_limit_hits=_read_key(self.pids / "pids.events", "max"),
        )

    def kill_all(self) -> None:
        _kill_procs(self._procs())

    def remove(self) -> None:
        self.kill_all()
        for path in (self.memory, self.pids, self.cpu):
            _rmdir(path)


class CgroupV2Limits:
    """One cgroup per sandbox in a unified tree with memory, pids and cpu enabled."""

    name = "cgroup-v2"

    def __init__(self, sandbox_id: str, caps: Caps, root: Path = CGROUP_ROOT) -> None:
        self.caps = caps
        parent = root / _GROUP
        parent.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
        self.path = parent / sandbox_id
        self.path.mkdir(exist_ok=True)
        _write(self.path / "memory.max", str(caps.memory_bytes))
        with contextlib.suppress(OSError):
            _write(self.path / "memory.swap.max", "0")
        _write(self.path / "pids.max", str(caps.max_processes))
        period = 100_000
        _write(self.path / "cpu.max", f"{max(1000, int(caps.cpus * period))} {period}")

    @staticmethod
    def available(root: Path = CGROUP_ROOT) -> bool:
        try:
            controllers = (root / "cgroup.controllers").read_text().split()
        except OSError:
            return False
        return {"memory", "pids", "cpu"} <= set(controllers) and os.access(root, os.W_OK)

    def wrap_command(self, command: list[str]) -> list[str]:
        rlimits = _rlimit_prefix(self.caps, memory=False, processes=True, slack=32)
        return [
            "/bin/sh",
            "-c",
            _JOIN,
            "sh",
            str(self.path / "cgroup.procs"),
            "--",
            *rlimits,
            *command,
        ]

    def usage(self) -> Usage:
        return Usage(
            oom_kills=_read_key(self.path / "memory.events", "oom_kill"),
            process_limit_hits=_read_key(self.path / "pids.events", "max"),
        )

    def kill_all(self) -> None:
        kill = self.path / "cgroup.kill"
        if kill.exists():
            with contextlib.suppress(OSError):
                _write(kill, "1")
        _kill_procs([self.path / "cgroup.procs"])

    def remove(self) -> None:
        self.kill_all()
        _rmdir(self.path)


class RlimitLimits:
    """No usable cgroups: rlimits on the launched process (memory as address space)."""

    name = "rlimit"

    def __init__(self, sandbox_id: str, caps: Caps) -> None:
        self.caps = caps

    def wrap_command(self, command: list[str]) -> list[str]:
        return [*_rlimit_prefix(self.caps, memory=True, processes=True), *command]

    def usage(self) -> Usage:
        return Usage()

    def kill_all(self) -> None:
        # The sandbox's pid namespace dies with its first process, which the caller kills.
        return None

    def remove(self) -> None:
        return None


def remove_stale_cgroups(is_stale: Callable[[str], bool], root: Path = CGROUP_ROOT) -> None:
    """Kill and remove sandbox cgroups whose owner is gone (names start with its instance)."""
    parents = [root / ctl / _GROUP for ctl in ("memory", "pids", "cpu")] + [root / _GROUP]
    for parent in parents:
        if not parent.is_dir():
            continue
        for group in parent.iterdir():
            if group.is_dir() and is_stale(group.name):
                _kill_procs([group / "cgroup.procs"])
                _rmdir(group)


def limits_backend() -> str:
    """Which backend `create_limits` picks on this machine."""
    if CgroupV1Limits.available():
        return CgroupV1Limits.name
    if CgroupV2Limits.available():
        return CgroupV2Limits.name
    return RlimitLimits.name


def create_limits(sandbox_id: str, caps: Caps, backend: str | None = None) -> Limits:
    """Caps for one sandbox with the best backend this machine offers."""
    backend = backend or limits_backend()
    if backend == CgroupV1Limits.name:
        return CgroupV1Limits(sandbox_id, caps)
    if backend == CgroupV2Limits.name:
        return CgroupV2Limits(sandbox_id, caps)
    return RlimitLimits(sandbox_id, caps)
