"""Setting the host up for local sandboxes, once per app process: the sandbox root and this
process's run folder, what dead processes left behind, the confined /etc, the boot scripts, the
egress proxies, the package installer, seccomp and resource limits, and the ZeroMQ context."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import structlog
import zmq
import zmq.asyncio

from fragments.config import Settings
from fragments.sandbox.local.boot import write_boot_script
from fragments.sandbox.local.build import TemplateBuildError, ensure_traversable
from fragments.sandbox.local.confine import prepare_etc
from fragments.sandbox.local.egress import EgressSetup, egress_setup, index_urls_from_environment
from fragments.sandbox.local.install import Installer, prepare_installer
from fragments.sandbox.local.limits import Caps, limits_backend, remove_stale_cgroups
from fragments.sandbox.local.probe import require_protections
from fragments.sandbox.local.sandbox_base import KernelConfig
from fragments.sandbox.local.seccomp import seccomp_filter
from fragments.sandbox.local.web_boot import write_web_boot
from fragments.sandbox.service import SandboxUnavailable

log = structlog.get_logger(__name__)

# ZeroMQ refuses (and disconnects) an inbound message above this size: a hostile cell cannot
# make the app buffer an arbitrarily large single output message.
_MIN_MAX_MESSAGE = 16 * 1024 * 1024


@dataclass(slots=True)
class HostSetup:
    """What every sandbox of this process shares."""

    config: KernelConfig
    web_boot: Path
    egress: EgressSetup
    # None when uv is missing: fragments' extra packages then cannot be installed.
    installer: Installer | None


def probe_uid(settings: Settings) -> int:
    """The uid just past the slots' range: never a sandbox's, so a probe cannot disturb one."""
    return settings.sandbox_uid_base + settings.sandbox_max_count


def set_up_host(settings: Settings, instance: str) -> HostSetup:
    """Prepare the sandbox root and this process's run folder (see the module docstring)."""
    s = settings
    root = s.sandbox_root
    try:
        ensure_traversable(root)
    except TemplateBuildError as exc:
        raise SandboxUnavailable(str(exc)) from exc
    root.chmod(0o755)
    for sub in ("run", "slots"):
        (root / sub).mkdir(mode=0o711, exist_ok=True)
    remove_stale_once(root)
    run_root = root / "run" / instance
    run_root.mkdir(mode=0o711)
    etc = prepare_etc(root)
    boot = write_boot_script(root)
    web_boot = write_web_boot(root)
    egress = egress_setup(
        run_root,
        mode=s.sandbox_egress,
        registry_hosts=[h for h in s.sandbox_registry_hosts.split(",") if h],
        index_urls=[s.sandbox_pip_index, *index_urls_from_environment()],
    )
    installer: Installer | None = None
    try:
        # The uid just past the probe's: never a sandbox's, owns the install cache.
        installer = prepare_installer(
            root,
            probe_uid(s) + 1,
            s.sandbox_install_timeout_seconds,
            s.sandbox_pip_index,
            egress.installs,
        )
    except TemplateBuildError as exc:
        log.warning("sandbox_installer_unavailable", error=str(exc))
    seccomp = seccomp_filter(root) if s.sandbox_seccomp else None
    backend = limits_backend() if s.sandbox_limits == "auto" else s.sandbox_limits
    log.info("sandbox_backend_ready", root=str(root), limits=backend, seccomp=seccomp is not None)
    config = KernelConfig(
        run_root=run_root,
        etc=etc,
        uid_base=s.sandbox_uid_base,
        caps=Caps(
            memory_bytes=s.sandbox_memory_bytes,
            max_processes=s.sandbox_max_processes,
            cpus=s.sandbox_cpus,
        ),
        limits_backend=backend,
        seccomp=seccomp,
        start_timeout=s.sandbox_start_timeout_seconds,
        run_timeout=s.sandbox_run_timeout_seconds,
        interrupt_grace=s.sandbox_interrupt_grace_seconds,
        output_cap=s.sandbox_output_cap_bytes,
        boot_script=boot,
        egress=egress.code,
    )
    if s.env == "production":
        require_protections(config, probe_uid(s))
    return HostSetup(config=config, web_boot=web_boot, egress=egress, installer=installer)


def make_context(output_cap: int) -> zmq.asyncio.Context:
    """The ZeroMQ context every kernel connection of this process uses."""
    context = zmq.asyncio.Context()
    context.setsockopt(zmq.MAXMSGSIZE, max(_MIN_MAX_MESSAGE, 4 * output_cap))
    # ipc sockets do not exist until the kernel binds them: retry connecting quickly.
    context.setsockopt(zmq.RECONNECT_IVL, 10)
    context.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
    context.setsockopt(zmq.LINGER, 0)
    return context


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _instance_alive(name: str) -> bool:
    pid, _, _ = name.partition("-")
    return pid.isdigit() and _pid_alive(int(pid))


def _unmount_below(path: Path) -> None:
    """Lazily unmount what a dead app left mounted under `path` (Node project overlays)."""
    prefix = str(path) + "/"
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def remove_stale_once(root: Path) -> bool:
    """`remove_stale` under an exclusive `flock` on `<root>/.cleanup.lock`: one process of the
    machine cleans at a time, the others skip (False). The orphans are this machine's own
    folders, mounts and cgroups, so the lock is the machine's, not the fleet's; the kernel drops
    it when its holder dies, so a crashed cleaner never blocks the next start."""
    fd = os.open(root / ".cleanup.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("sandbox_cleanup_skipped", reason="another process is cleaning")
            return False
        remove_stale(root / "run")
        return True
    finally:
        os.close(fd)


def remove_stale(run_root: Path) -> None:
    """Folders and cgroups left by app processes that died without cleaning up."""
    for path in run_root.iterdir():
        if not _instance_alive(path.name):
            _unmount_below(path)
            shutil.rmtree(path, ignore_errors=True)
    remove_stale_cgroups(lambda name: not _instance_alive(name))
