"""A seccomp denylist for sandboxes, compiled once to a BPF file that bwrap loads (`--seccomp FD`).

libseccomp's Python binding ships with Debian (`python3-seccomp`) for the system interpreter, not
for our virtualenv, so the filter is compiled by running that interpreter once; the file is kept
under the sandbox root, keyed by a hash of the rules. Without the binding sandboxes run without
seccomp (namespaces, no_new_privs and the caps still apply) and a warning is logged.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# Kernel surfaces a Python cell never needs: debugging other processes, (un)mounting and
# namespaces (bwrap sets those up before the filter applies), kernel keyrings, eBPF, perf,
# modules, io_uring, userfaultfd, raw packet sockets, clock and system changes.
DENIED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "fanotify_init",
    "iopl",
    "ioperm",
    "uselib",
    "vhangup",
)

# AF_NETLINK must stay allowed: ZeroMQ enumerates interfaces through it and aborts otherwise.
_COMPILER = """
import errno, socket, sys
import seccomp
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for name in sys.argv[2].split(","):
    try:
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
    except Exception:
        pass  # not a syscall on this architecture
f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket",
           seccomp.Arg(0, seccomp.EQ, socket.AF_PACKET))
with open(sys.argv[1], "wb") as out:
    f.export_bpf(out)
"""


def seccomp_filter(root: Path, python: Path = Path("/usr/bin/python3")) -> Path | None:
    """The compiled filter's path, compiling it on first use; None when it cannot be built."""
    digest = hashlib.sha256((_COMPILER + ",".join(DENIED_SYSCALLS)).encode()).hexdigest()[:12]
    path = root / f"seccomp-{digest}.bpf"
    if path.exists() and path.stat().st_size > 0:
        return path
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        done = subprocess.run(
            [str(python), "-c", _COMPILER, str(tmp), ",".join(DENIED_SYSCALLS)],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("seccomp_unavailable", reason=str(exc))
        return None
    if done.returncode != 0 or not tmp.exists():
        log.warning(
            "seccomp_unavailable",
            reason=done.stderr.decode(errors="replace").strip().splitlines()[-1:],
            hint="apt-get install python3-seccomp",
        )
        tmp.unlink(missing_ok=True)
        return None
    tmp.chmod(0o644)
    tmp.rename(path)
    return path
