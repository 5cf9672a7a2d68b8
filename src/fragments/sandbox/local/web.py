"""One confined web sandbox: a dev server (Streamlit, Gradio) with no network at all.

The server listens on 127.0.0.1:<template port> inside the sandbox's own network namespace (so
every sandbox can use the same port); socat, started beside it inside the sandbox, forwards a
unix socket in a folder bound at /run/kernel to that port, and the app's preview proxy connects
to the socket's host path. Once the socket exists the folder is handed back to root, so code in
the sandbox cannot swap the socket for a link to some host socket the app would then reach.

Files are written by the app into the workspace with every path component opened
O_NOFOLLOW relative to the workspace, and renamed into place (a dev server never reloads a
half-written file); a link planted by the sandbox is refused, never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import subprocess
import time
from pathlib import Path, PurePosixPath

import httpx
import structlog
from websockets.asyncio.client import unix_connect
from websockets.typing import Subprotocol

from fragments.sandbox.local.build import TemplateEnv
from fragments.sandbox.local.confine import (
    DEPS_DIR,
    HOME,
    KERNEL_DIR,
    Confinement,
)
from fragments.sandbox.local.node_build import DEV_ENV
from fragments.sandbox.local.sandbox_base import (
    MAX_SOCKET_PATH,
    ConfinedSandbox,
    KernelConfig,
    SandboxStartError,
)
from fragments.sandbox.local.web_boot import (
    BOOT_DIR,
    RELOAD_FAILED_MARK,
    RELOADED_MARK,
    SOURCES,
)
from fragments.sandbox.templates.runtimes import STREAMLIT_WARM_TEXT, runtime_of
from fragments.schemas import ExecutionError

log = structlog.get_logger(__name__)

SOCKET_NAME = "http.sock"
_POLL = 0.05
_LOG_TAIL = 8192
# A Streamlit BackMsg asking for a script run (`rerun_script` with an empty ClientState).
_STREAMLIT_RERUN = b"Z\x00"


def server_command(env: TemplateEnv, entry: str, port: int) -> list[str]:
    """The dev server's command line inside the sandbox (the template's runtime says which)."""
    command = runtime_of(env.template).server_command(
        python=str(env.python),
        boot_dir=BOOT_DIR,
        root=env.path,
        entry=entry,
        port=port,
        host="127.0.0.1",
    )
    if not command:
        raise SandboxStartError(f"The template {env.template.id} has no dev server here.")
    return command


def _with_forwarder(port: int, command: list[str]) -> list[str]:
    # nodelay: small writes (a WebSocket frame, a request's tail) are never held back by Nagle.
    forward = (
        f"socat UNIX-LISTEN:{KERNEL_DIR}/{SOCKET_NAME},fork,unlink-early,mode=600 "
        f'TCP:127.0.0.1:{port},nodelay &\nexec "$@"'
    )
    return ["/bin/sh", "-c", forward, "sh", *command]


class WorkspaceWriteError(Exception):
    """A file could not be written into the workspace (the message says which and why)."""


def _open_dir(parent: int, name: str, uid: int) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
        os.chown(name, uid, uid, dir_fd=parent, follow_symlinks=False)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)


def write_workspace(home: Path, uid: int, files: list[tuple[str, str | bytes]]) -> None:
    """Write (relative path, content) pairs under `home`, owned by `uid`; never follows links."""
    root = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for rel, content in files:
            parts = [p for p in PurePosixPath(rel.replace("\\", "/")).parts if p not in ("", ".")]
            if not parts or ".." in parts:
                raise WorkspaceWriteError(f"'{rel[:80]}' is not a file path in the workspace.")
            fd = os.dup(root)
            try:
                for part in parts[:-1]:
                    try:
                        nested = _open_dir(fd, part, uid)
                    except OSError as exc:
                        raise WorkspaceWriteError(
                            f"Cannot write '{rel[:80]}': '{part}' is not a folder."
                        ) from exc
                    os.close(fd)
                    fd = nested
                name = parts[-1]
                tmp = f".{name}.fragments-{os.getpid()}-{time.monotonic_ns()}"
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                out = os.open(tmp, flags, 0o644, dir_fd=fd)
                try:
                    os.fchown(out, uid, uid)
                    data = content.encode() if isinstance(content, str) else content
                    view = memoryview(data)
                    while view:
                        view = view[os.write(out, view) :]
                finally:
                    os.close(out)
                try:
                    os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=fd)
                    raise WorkspaceWriteError(
                        f"Cannot write '{rel[:80]}': {os.strerror(exc.errno or errno.EIO)}."
                    ) from exc
            finally:
                os.close(fd)
    finally:
        os.close(root)


class WebSandbox(ConfinedSandbox):
    """A sandbox serving one web app from its workspace; restarted in place when needed."""

    kind = "web"

    def __init__(
        self,
        *,
        sandbox_id: str,
        owner: str | None,
        slot: int,
        env: TemplateEnv,
        config: KernelConfig,
        web_boot: Path | None,
        node_gid: int | None = None,
    ) -> None:
        super().__init__(sandbox_id=sandbox_id, owner=owner, slot=slot, env=env, config=config)
        self.socket_dir = self.root / "kernel"
        self.port = env.template.port or 0
        self.entry = env.template.file
        self._web_boot = web_boot
        # Node projects: the template is an overlay (shared read-only lower, this sandbox's
        # upper) mounted here on the host and bound at the template's own path inside, where
        # its caches were built; files are group-writable for the sandboxes' shared group.
        self.node = env.template.language == "node"
        self.node_gid = node_gid
        self.merged = self.root / "merged"
        self._mounted = False
        self._line = bytearray()
        # True once the server has answered since its last start.
        self.serving = False
        # Reloads of the app's file the Gradio launcher reported (see web_boot), and a wake-up.
        self.reloads = 0
        self.reload_failures = 0
        self._reloaded = asyncio.Event()

    @property
    def socket(self) -> Path:
        return self.socket_dir / SOCKET_NAME

    def prepare(self) -> None:
        """Create the workspace and socket folders (owned by the sandbox's uid)."""
        self._make_dirs((self.home, self.socket_dir))
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise SandboxStartError(
                f"The sandbox folder path is too long for unix sockets ({self.socket}); "
                "use a shorter FRAGMENTS_SANDBOX_ROOT."
            )

    def _mount_overlay(self) -> None:
        if self._mounted:
            return
        upper, work = self.root / "upper", self.root / "work"
        for path in (upper, work, self.merged):
            path.mkdir(mode=0o755, exist_ok=True)
        os.chown(upper, self.uid, self.node_gid if self.node_gid is not None else self.uid)
        options = f"lowerdir={self.env.path},upperdir={upper},workdir={work}"
        done = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(self.merged)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SandboxStartError(f"The project overlay could not be mounted: {done.stderr}")
        self._mounted = True

    def _unmount_overlay(self) -> None:
        if self._mounted:
            subprocess.run(["umount", "-l", str(self.merged)], capture_output=True, check=False)
            self._mounted = False

    async def write_files(self, files: list[tuple[str, str | bytes]]) -> ExecutionError | None:
        """Write the fragment's files into the workspace; an error result instead of a raise."""
        self.last_used = time.monotonic()
        await asyncio.to_thread(self.prepare)
        target = self.home
        if self.node:
            try:
                await asyncio.to_thread(self._mount_overlay)
            except SandboxStartError as exc:
                return ExecutionError(name="SandboxError", value=str(exc))
            target = self.merged
        try:
            await asyncio.to_thread(write_workspace, target, self.uid, files)
        except (WorkspaceWriteError, OSError) as exc:
            return ExecutionError(name="WriteError", value=str(exc))
        return None

    def log_tail(self) -> str:
        text = self._log_tail.decode(errors="replace")
        for mark in (RELOADED_MARK, RELOAD_FAILED_MARK):
            text = text.replace(f"{mark}\n", "")
        return text

    async def start(self) -> None:
        """Launch the dev server confined and wait until it answers HTTP."""
        await self.stop()
        await asyncio.to_thread(self.prepare)
        # The folder is the sandbox's again until its forwarder has bound the new socket.
        os.chown(self.socket_dir, self.uid, self.uid)
        self.socket_dir.chmod(0o700)
        self.socket.unlink(missing_ok=True)
        ro_files: list[tuple[Path, str]] = [(self.deps, DEPS_DIR)]
        rw_binds: tuple[tuple[Path, str], ...] = ()
        gid = self.uid
        workdir = HOME
        extra_env: dict[str, str] = {}
        if self.node:
            await asyncio.to_thread(self._mount_overlay)
            rw_binds = ((self.merged, str(self.env.path)),)
            gid = self.node_gid if self.node_gid is not None else self.uid
            workdir = str(self.env.path)
            extra_env = {**DEV_ENV, "PATH": f"{self.env.path}/node_modules/.bin:/usr/bin:/bin"}
        if self._web_boot is not None and not self.node:
            for name in SOURCES:
                ro_files.append((self._web_boot / name, f"{BOOT_DIR}/{name}"))
        for cache in sorted(self.env.mpl_cache.glob("fontlist-*.json")):
            ro_files.append((cache, f"/tmp/matplotlib/{cache.name}"))

        def confinement(seccomp_fd: int | None) -> Confinement:
            return Confinement(
                uid=self.uid,
                gid=gid,
                etc=self.config.etc,
                template_env=self.env.path,
                home=self.home,
                kernel_dir=self.socket_dir,
                cpus=self.config.caps.cpus,
                seccomp_fd=seccomp_fd,
                ro_files=tuple(ro_files),
                rw_binds=rw_binds,
                workdir=workdir,
                egress=self.config.egress,
                env={
                    "PYTHONPATH": DEPS_DIR,
                    "MPLBACKEND": "agg",
                    "MPLCONFIGDIR": "/tmp/matplotlib",
                    "PYTHONUNBUFFERED": "1",
                    "GRADIO_ANALYTICS_ENABLED": "False",
                    "GRADIO_TEMP_DIR": "/tmp/gradio",
                    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
                    "HF_HUB_OFFLINE": "1",
                    **extra_env,
                },
            )

        inner = _with_forwarder(self.port, server_command(self.env, self.entry, self.port))
        started = await self._launch(confinement, inner)
        self._line.clear()
        self.starts += 1
        self.serving = False
        await self.wait_ready()
        log.info(
            "sandbox_web_started",
            sandbox_id=self.id,
            template=self.env.template.id,
            uid=self.uid,
            seconds=round(time.monotonic() - started, 3),
        )

    async def _drain_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            self._log_tail += chunk
            del self._log_tail[:-_LOG_TAIL]
            self._line += chunk
            *lines, rest = self._line.split(b"\n")
            self._line[:] = rest[-_LOG_TAIL:]
            for line in lines:
                self._count_mark(line.strip())
        self._reloaded.set()  # the process is gone: whoever waits for a reload must look

    def _count_mark(self, line: bytes | bytearray) -> None:
        # The app's own code can print these lines too; all it gains is an early answer (or an
        # error) about its own app, so they need not be unforgeable.
        if line == RELOADED_MARK.encode():
            self.reloads += 1
        elif line == RELOAD_FAILED_MARK.encode():
            self.reload_failures += 1
        else:
            return
        self._reloaded.set()

    async def wait_reload(self, reloads: int, failures: int) -> ExecutionError | None:
        """Wait until the launcher reports a reload after (`reloads`, `failures`) were counted.

        None once the new code is served; the app's traceback if running it failed (the server
        keeps serving the previous version then); an error if the server died or never
        noticed the file.
        """
        deadline = time.monotonic() + self.config.start_timeout
        while self.reloads == reloads and self.reload_failures == failures:
            if not self.alive:
                return ExecutionError(
                    name="AppError", value="The app stopped." + self._tail_suffix()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ExecutionError(
                    name="AppError", value="The app did not reload the new code in time."
                )
            self._reloaded.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reloaded.wait(), min(remaining, 1.0))
        if self.reload_failures != failures:
            return ExecutionError(name="AppError", value="The app failed." + self._tail_suffix())
        return None

    def _lock_socket_dir(self) -> None:
        # See the module docstring: from now on only root may change this folder.
        os.chown(self.socket_dir, 0, 0)
        self.socket_dir.chmod(0o755)

    async def wait_ready(self) -> None:
        """Wait until the server answers HTTP; the process is stopped if it never does."""
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        self.serving = True

    async def _wait_ready(self) -> None:
        # A Node dev server compiles the first page before answering: give it longer.
        timeout = max(self.config.start_timeout, 120.0) if self.node else self.config.start_timeout
        deadline = time.monotonic() + timeout
        locked = False
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        async with httpx.AsyncClient(transport=transport, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.returncode is not None:
                    if self._drain is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(self._drain, 1)
                    raise self._startup_failure()
                if not locked:
                    try:
                        is_socket = stat.S_ISSOCK(os.lstat(self.socket).st_mode)
                    except OSError:
                        is_socket = False
                    if not is_socket:
                        await asyncio.sleep(_POLL)
                        continue
                    self._lock_socket_dir()
                    locked = True
                try:
                    response = await client.get(
                        f"http://127.0.0.1:{self.port}/",
                        headers={"host": f"127.0.0.1:{self.port}"},
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(_POLL)
                    continue
                if response.status_code < 500:
                    return
                await asyncio.sleep(_POLL)
        raise SandboxStartError(
            f"The app did not answer within {timeout:.0f} s." + self._tail_suffix()
        )

    async def warm_streamlit(self) -> None:
        """Render the placeholder once in a session, then close it.

        The first script run in a Streamlit process pays for importing and initialising the
        element and messaging code (a few hundred ms on one CPU); doing it here moves that
        cost from the owner's first page view to the pool's refill. Once the last session
        has gone, Streamlit drops its compiled-script cache, so the owner's app is read anew.
        """
        async with (
            asyncio.timeout(self.config.start_timeout),
            unix_connect(
                str(self.socket),
                f"ws://127.0.0.1:{self.port}/_stcore/stream",
                subprotocols=[Subprotocol("streamlit")],
            ) as ws,
        ):
            await ws.send(_STREAMLIT_RERUN)
            while True:
                message = await ws.recv()
                if isinstance(message, bytes) and STREAMLIT_WARM_TEXT.encode() in message:
                    return

    def _tail_suffix(self) -> str:
        tail = self.log_tail().strip()
        return f"\n{tail[-2000:]}" if tail else ""

    def _startup_failure(self) -> SandboxStartError:
        status = self._proc.returncode if self._proc else None
        detail = f" (exit status {status})" if status is not None else ""
        # The launchers' own complaints mean the sandbox failed, not the app.
        launcher = any(f"{tool}:" in self.log_tail() for tool in ("bwrap", "setpriv", "socat"))
        return SandboxStartError(
            f"The app stopped while starting{detail}." + self._tail_suffix(),
            app_failed=not launcher,
        )

    def _release_folders(self) -> None:
        self._unmount_overlay()
