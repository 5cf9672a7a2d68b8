"""Installing a fragment's extra packages (uv for Python, npm for Node), confined.

The install is its own bubblewrap run, separate from the app's, with its own network namespace
like every sandbox: it reaches the package registries only, over HTTPS through the app's egress
proxy (`egress/`, policy `registries`; socat inside forwards 127.0.0.1:3128 to the proxy's
bound socket, and the proxy resolves names, so there is no DNS inside). It runs as a dedicated
installer uid that no sandbox uses, and executes only uv, with wheels only (`--only-binary
:all:`), so no package's own code runs during the install. Packages land in the sandbox's `deps`
folder, bound read-only at /opt/deps in the sandbox and first on its PYTHONPATH; the download
cache is shared by installs only and never visible to a running sandbox. Node packages go into
the sandbox's project overlay with `npm install --ignore-scripts`, run the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from fragments.sandbox.local.build import TemplateBuildError, TemplateEnv
from fragments.sandbox.local.confine import DEPS_DIR as DEPS_PATH
from fragments.sandbox.local.confine import Confinement, bwrap_command
from fragments.sandbox.local.egress import SandboxEgress
from fragments.sandbox.local.limits import create_limits
from fragments.sandbox.local.sandbox_base import KernelConfig
from fragments.schemas import ExecutionError

log = structlog.get_logger(__name__)

UV_PATH = "/opt/fragments/uv"
WHEELS_PATH = "/opt/fragments/wheels"
CACHE_PATH = "/var/cache/fragments-uv"
_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Host files an install needs to verify the registry (checked once, at import); no resolv.conf:
# names are resolved by the egress proxy.
_NET_ETC = tuple(name for name in ("ssl",) if Path("/etc", name).exists())
_HAS_CA_BUNDLE = _CA_BUNDLE.exists()


@dataclass(frozen=True, slots=True)
class Installer:
    """What an install needs, resolved once per app."""

    uv: Path
    cache: Path
    uid: int
    timeout: float
    # An index URL, or a host folder of wheels used with --no-index.
    index: str | None = None
    # The registries-only egress proxy; without it an install has no network at all.
    egress: SandboxEgress | None = None


def _real_uv() -> Path:
    """The uv binary itself (not a pyenv shim script, which the sandbox could not run)."""
    found = shutil.which("uv")
    if found:
        path = Path(found).resolve()
        with open(path, "rb") as f:
            if f.read(2) != b"#!":
                return path
    for python in (sys.executable, shutil.which("python3")):
        if not python:
            continue
        done = subprocess.run(
            [python, "-c", "import uv; print(uv.find_uv_bin())"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip()).resolve()
    raise TemplateBuildError("uv is needed to install packages; `python3 -m pip install uv`.")


def prepare_installer(
    root: Path,
    uid: int,
    timeout: float,
    index: str | None = None,
    egress: SandboxEgress | None = None,
) -> Installer:
    """Copy uv where the installer uid can run it; create the shared cache (once)."""
    lib = root / "lib"
    lib.mkdir(mode=0o755, exist_ok=True)
    source = _real_uv()
    target = lib / f"uv-{source.stat().st_size}"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        tmp.chmod(0o755)
        tmp.rename(target)
    cache = root / "cache" / "uv"
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    cache.parent.chmod(0o711)
    os.chown(cache, uid, uid)
    return Installer(uv=target, cache=cache, uid=uid, timeout=timeout, index=index, egress=egress)


def prepare_deps_dir(deps: Path, installer_uid: int) -> None:
    """The folder packages are installed into: the installer's, readable by the sandbox."""
    deps.mkdir(mode=0o755, exist_ok=True)
    os.chown(deps, installer_uid, installer_uid)


def pip_confinement(
    *, root: Path, deps: Path, env: TemplateEnv, config: KernelConfig, installer: Installer
) -> tuple[Confinement, list[str]]:
    """The confinement a Python install runs in, and uv's arguments for the package source."""
    scratch = root / "install-home"
    scratch.mkdir(mode=0o700, exist_ok=True)
    os.chown(scratch, installer.uid, installer.uid)
    prepare_deps_dir(deps, installer.uid)
    ro_files: list[tuple[Path, str]] = [(installer.uv, UV_PATH)]
    for name in _NET_ETC:
        ro_files.append((Path("/etc", name), f"/etc/{name}"))
    source: list[str] = []
    if installer.index and installer.index.startswith("/"):
        ro_files.append((Path(installer.index), WHEELS_PATH))
        source = ["--no-index", "--find-links", WHEELS_PATH]
    elif installer.index:
        source = ["--index-url", installer.index]
    extra_env = {
        "UV_NO_PROGRESS": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_CACHE_DIR": CACHE_PATH,
        "PYTHONPATH": "",
    }
    if _HAS_CA_BUNDLE:
        extra_env["SSL_CERT_FILE"] = str(_CA_BUNDLE)
    # The app's own HTTP(S)_PROXY is the egress proxy's upstream, not the installer's.
    for key in ("UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        if os.environ.get(key):
            extra_env[key] = os.environ[key]
    confinement = Confinement(
        uid=installer.uid,
        gid=installer.uid,
        etc=config.etc,
        template_env=env.path,
        home=scratch,
        kernel_dir=deps,
        cpus=config.caps.cpus,
        ro_files=tuple(ro_files),
        rw_binds=((installer.cache, CACHE_PATH), (deps, DEPS_PATH)),
        egress=installer.egress,
        env=extra_env,
    )
    return confinement, source


async def install_packages(
    *,
    sandbox_id: str,
    root: Path,
    deps: Path,
    env: TemplateEnv,
    packages: list[str],
    config: KernelConfig,
    installer: Installer,
) -> ExecutionError | None:
    """Install `packages` (validated requirement strings) into `deps`; the error, if any."""
    confinement, source = pip_confinement(
        root=root, deps=deps, env=env, config=config, installer=installer
    )
    command = [
        UV_PATH,
        "pip",
        "install",
        "--target",
        DEPS_PATH,
        "--python",
        str(env.python),
        "--only-binary",
        ":all:",
        *source,
        "--",
        *packages,
    ]
    return await _run_install(sandbox_id, confinement, command, packages, config, installer)


async def _run_install(
    sandbox_id: str,
    confinement: Confinement,
    command: list[str],
    packages: list[str],
    config: KernelConfig,
    installer: Installer,
) -> ExecutionError | None:
    """Run one confined install command; its output as the error when it fails."""
    scratch = confinement.home
    limits = create_limits(
        f"{config.run_root.name}-{sandbox_id}-install", config.caps, config.limits_backend
    )
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *limits.wrap_command(bwrap_command(confinement, command)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), installer.timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.to_thread(limits.remove)
        return ExecutionError(
            name="InstallError",
            value=f"Installing {', '.join(packages)} took longer than {installer.timeout:g} s.",
        )
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    await asyncio.to_thread(limits.remove)
    await asyncio.to_thread(shutil.rmtree, scratch, True)
    text = output.decode(errors="replace").strip()
    log.info(
        "sandbox_install",
        sandbox_id=sandbox_id,
        packages=packages,
        status=proc.returncode,
        seconds=round(time.monotonic() - started, 2),
    )
    if proc.returncode != 0:
        return ExecutionError(
            name="InstallError",
            value=f"Installing {', '.join(packages)} failed:\n{text[-3000:]}",
        )
    return None


NPM_CACHE_PATH = "/var/cache/fragments-npm"


async def install_npm_packages(
    *,
    sandbox_id: str,
    root: Path,
    project: Path,
    env: TemplateEnv,
    gid: int,
    packages: list[str],
    config: KernelConfig,
    installer: Installer,
) -> ExecutionError | None:
    """`npm install --ignore-scripts` validated names into a Node sandbox's project overlay.

    Runs as the installer uid with the Node sandboxes' group (the template tree is writable by
    it), at the project's in-sandbox path; no package's install script runs anywhere.
    """
    scratch = root / "install-home"
    scratch.mkdir(mode=0o700, exist_ok=True)
    os.chown(scratch, installer.uid, gid)
    cache = installer.cache.parent / "npm"
    cache.mkdir(mode=0o700, exist_ok=True)
    os.chown(cache, installer.uid, installer.uid)
    ro_files: list[tuple[Path, str]] = []
    for name in _NET_ETC:
        ro_files.append((Path("/etc", name), f"/etc/{name}"))
    extra_env = {
        "npm_config_cache": NPM_CACHE_PATH,
        "npm_config_update_notifier": "false",
        "NO_UPDATE_NOTIFIER": "1",
        "PATH": "/usr/bin:/bin",
    }
    if _HAS_CA_BUNDLE:
        extra_env["NODE_EXTRA_CA_CERTS"] = str(_CA_BUNDLE)
    for key in ("npm_config_registry",):
        if os.environ.get(key):
            extra_env[key] = os.environ[key]
    confinement = Confinement(
        uid=installer.uid,
        gid=gid,
        etc=config.etc,
        template_env=env.path,
        home=scratch,
        kernel_dir=scratch,
        cpus=config.caps.cpus,
        ro_files=tuple(ro_files),
        rw_binds=((project, str(env.path)), (cache, NPM_CACHE_PATH)),
        egress=installer.egress,
        workdir=str(env.path),
        env=extra_env,
    )
    command = [
        "npm",
        "install",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        "--",
        *packages,
    ]
    return await _run_install(sandbox_id, confinement, command, packages, config, installer)
