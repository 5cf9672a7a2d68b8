"""Host confinement probing: can a confined process start here, and does production get every
essential protection (namespaces, a read-only view of the host, no network, a non-root uid,
memory and process caps)?"""

from __future__ import annotations

import subprocess

from fragments.sandbox.local.sandbox_base import KernelConfig
from fragments.sandbox.service import SandboxUnavailable


def probe_confinement(uid: int) -> None:
    """Start `true` under bubblewrap as `uid`, as a sandbox would be; raise when it cannot."""
    command = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--no-new-privs",
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--",
        "/usr/bin/true",
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap cannot run ({exc})") from exc
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()[:200]
        raise SandboxUnavailable(f"bubblewrap cannot run ({reason or done.returncode})")


def require_protections(config: KernelConfig, probe_uid: int) -> None:
    """Production refuses local sandboxes missing an essential protection: namespaces
    (network, a read-only view of the host), a non-root uid, memory and process caps."""
    if config.uid_base < 1000:
        raise SandboxUnavailable(
            "Refusing local sandboxes in production: FRAGMENTS_SANDBOX_UID_BASE must give "
            "each sandbox a non-system uid (1000 or more)."
        )
    try:
        probe_confinement(probe_uid)
    except SandboxUnavailable as exc:
        raise SandboxUnavailable(
            f"Refusing local sandboxes in production: {exc.detail} (namespaces, a read-only "
            "view of the host and no network need bubblewrap)."
        ) from exc
    if config.caps.memory_bytes <= 0 or config.caps.max_processes <= 0:
        raise SandboxUnavailable(
            "Refusing local sandboxes in production without memory and process caps."
        )
