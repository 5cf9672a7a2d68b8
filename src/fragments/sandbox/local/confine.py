"""The confinement command: setpriv drops to the sandbox's own uid, bwrap builds its world.

Inside a sandbox the filesystem is a read-only tmpfs root with read-only binds of /usr (the
`/bin`, `/lib*` and `/sbin` links point into it), a handful of files for /etc (generated ones
for users and hosts, never the host's secrets), the template environment at its host path, a
private tmpfs /tmp, the sandbox's workspace read-write as /home/user and the kernel's socket
folder as /run/kernel. Every namespace is new: no network but its own loopback (a sandbox given
egress reaches only the app's HTTP proxy, through a bound unix socket: see `egress`), its own
pid tree (killed with its first process, which dies with the app), no further user namespaces.
The user is uid 1000 inside, a per-sandbox uid outside, with no_new_privs and a seccomp
denylist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from fragments.sandbox.local.egress import SandboxEgress

HOME = "/home/user"
KERNEL_DIR = "/run/kernel"
# A fragment's extra packages, installed by the confined installer, read-only in the sandbox.
DEPS_DIR = "/opt/deps"
INNER_UID = 1000

_PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"user:x:{INNER_UID}:{INNER_UID}:sandbox:{HOME}:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
_GROUP = f"root:x:0:\nuser:x:{INNER_UID}:\nnogroup:x:65534:\n"
_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
_NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n"
_GENERATED = {
    "passwd": _PASSWD,
    "group": _GROUP,
    "hosts": _HOSTS,
    "nsswitch.conf": _NSSWITCH,
    "hostname": "sandbox\n",
}
# Host files that are safe and useful to share (dynamic linker cache, time zone, MIME types).
_HOST_ETC = ("ld.so.cache", "localtime", "mime.types")


def prepare_etc(root: Path) -> Path:
    """Write the generated /etc files once under the sandbox root (world-readable)."""
    etc = root / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    for name, content in _GENERATED.items():
        path = etc / name
        if not path.exists() or path.read_text() != content:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(content)
            tmp.chmod(0o644)
            tmp.rename(path)
    return etc


@dataclass(frozen=True, slots=True)
class Confinement:
    """Everything that differs between two sandboxes' launch commands."""

    uid: int
    gid: int
    etc: Path
    template_env: Path
    home: Path
    kernel_dir: Path
    cpus: float
    seccomp_fd: int | None = None
    # (host path, sandbox path) pairs bound read-only, e.g. a pre-built font cache.
    ro_files: tuple[tuple[Path, str], ...] = ()
    # (host path, sandbox path) pairs bound read-write besides the workspace (installs only).
    rw_binds: tuple[tuple[Path, str], ...] = ()
    # The way out, if any: HTTP(S) through the app's egress proxy (never the host's network).
    egress: SandboxEgress | None = None
    # Where the command starts (a Node project runs from its own folder).
    workdir: str = HOME
    env: dict[str, str] = field(default_factory=dict)


def sandbox_env(c: Confinement) -> dict[str, str]:
    threads = str(max(1, math.ceil(c.cpus)))
    return {
        "HOME": HOME,
        "USER": "user",
        "LOGNAME": "user",
        "SHELL": "/bin/sh",
        "PATH": f"{c.template_env}/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        # BLAS pools sized to the CPU quota: no wasted threads against the pids cap.
        "OPENBLAS_NUM_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        **(c.egress.env() if c.egress is not None else {}),
        **c.env,
    }


def bwrap_command(c: Confinement, command: list[str]) -> list[str]:
    """The full launch command (caps are added around it by the limits backend)."""
    args = [
        "setpriv",
        f"--reuid={c.uid}",
        f"--regid={c.gid}",
        "--clear-groups",
        "--no-new-privs",
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        str(INNER_UID),
        "--gid",
        str(INNER_UID),
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--symlink",
        "usr/lib",
        "/lib",
    ]
    if Path("/usr/lib64").is_dir():
        args += ["--symlink", "usr/lib64", "/lib64"]
    if Path("/usr/lib32").is_dir():
        args += ["--symlink", "usr/lib32", "/lib32"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for name in _GENERATED:
        args += ["--ro-bind", str(c.etc / name), f"/etc/{name}"]
    for name in _HOST_ETC:
        if Path("/etc", name).exists():
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    args += ["--ro-bind", str(c.template_env), str(c.template_env)]
    ro_files = c.ro_files if c.egress is None else (*c.ro_files, c.egress.bind())
    for host, inside in ro_files:
        args += ["--ro-bind", str(host), inside]
    for host, inside in c.rw_binds:
        args += ["--bind", str(host), inside]
    args += [
        "--bind",
        str(c.home),
        HOME,
        "--bind",
        str(c.kernel_dir),
        KERNEL_DIR,
        # Everything not bound above (/, /etc, /run, ...) is a read-only tmpfs.
        "--remount-ro",
        "/",
        "--chdir",
        c.workdir,
        "--clearenv",
    ]
    for key, value in sandbox_env(c).items():
        args += ["--setenv", key, value]
    if c.seccomp_fd is not None:
        args += ["--seccomp", str(c.seccomp_fd)]
    if c.egress is not None:
        command = c.egress.wrap(command)
    return [*args, "--", *command]
