"""One confined Jupyter kernel: its folders, caps, process and client, and running a cell.

The kernel (ipykernel from the template environment) runs under `confine.bwrap_command` and
talks ZeroMQ over unix sockets (`transport: ipc`) in a folder bound into the sandbox at
/run/kernel; the host connects to the same sockets through their host paths. The sandbox has
no network at all, unless the operator allows egress (`egress/`: HTTP(S) via the app's proxy).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from queue import Empty
from typing import Any, cast

import structlog
import zmq
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.connect import KernelConnectionInfo

from fragments.sandbox.local.build import TemplateEnv
from fragments.sandbox.local.confine import DEPS_DIR, HOME, KERNEL_DIR, Confinement
from fragments.sandbox.local.output import OutputCollector
from fragments.sandbox.local.sandbox_base import (
    MAX_SOCKET_PATH,
    ConfinedSandbox,
    KernelConfig,
    SandboxStartError,
)
from fragments.schemas import ExecutionError, InterpreterResult

log = structlog.get_logger(__name__)

_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
_POLL = 0.1
# After execute_reply, how long to wait for the trailing `idle` (it can be lost if the iopub
# connection was dropped for an oversized message).
_IDLE_AFTER_REPLY = 1.0


def _fmt_bytes(n: int) -> str:
    gib = n / 2**30
    if gib >= 1 and gib == int(gib):
        return f"{int(gib)} GiB"
    return f"{n / 2**20:.0f} MiB"


BOOT_PATH = "/opt/fragments/kernel.py"
# Room for the notices the kernel itself appends past its (equal) cap.
_CAP_SLACK = 1024


def _kernel_command(env: TemplateEnv) -> list[str]:
    return [
        str(env.python),
        BOOT_PATH,
        "-f",
        f"{KERNEL_DIR}/connection.json",
        # History is a SQLite write per cell (~4 ms) that nobody reads here.
        "--HistoryManager.enabled=False",
        "--IPKernelApp.quiet=True",
    ]


def _make_client(context: zmq.asyncio.Context, info: dict[str, Any]) -> AsyncKernelClient:
    client = AsyncKernelClient(context=context)
    client.load_connection_info(cast(KernelConnectionInfo, info))
    return client


class KernelSandbox(ConfinedSandbox):
    """A sandbox holding one kernel; restarted in place when the kernel dies."""

    def __init__(
        self,
        *,
        sandbox_id: str,
        owner: str | None,
        slot: int,
        env: TemplateEnv,
        config: KernelConfig,
        context: zmq.asyncio.Context,
    ) -> None:
        super().__init__(sandbox_id=sandbox_id, owner=owner, slot=slot, env=env, config=config)
        self.context = context
        self.kernel_dir = self.root / "kernel"
        self._client: AsyncKernelClient | None = None
        # Reports the iopub connection's drops: ZeroMQ closes it over a message larger than
        # the cap and reconnects by itself, so without this a lost message could go unseen.
        self._iopub_monitor: zmq.Socket[bytes] | None = None
        self._connection_info: dict[str, Any] = {}

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return super().alive and self._client is not None

    def _prepare_dirs(self) -> None:
        self._make_dirs((self.home, self.kernel_dir))
        host_prefix = str(self.kernel_dir / "k")
        if len(host_prefix) + 3 > MAX_SOCKET_PATH:
            raise SandboxStartError(
                f"The sandbox folder path is too long for unix sockets ({host_prefix}); "
                "use a shorter FRAGMENTS_SANDBOX_ROOT."
            )

    def _connection(self) -> tuple[dict[str, Any], dict[str, Any]]:
        key = secrets.token_hex(32)
        common: dict[str, Any] = {
            **_PORTS,
            "transport": "ipc",
            "key": key,
            "signature_scheme": "hmac-sha256",
            "kernel_name": "python3",
        }
        inside = {**common, "ip": f"{KERNEL_DIR}/k"}
        host = {**common, "ip": str(self.kernel_dir / "k")}
        return inside, host

    async def start(self) -> None:
        """Launch the kernel and wait until it answers; raise SandboxStartError otherwise."""
        await self.stop()
        self._prepare_dirs()
        # Sockets of a previous kernel would make the new one fail to bind.
        for stale in self.kernel_dir.iterdir():
            stale.unlink(missing_ok=True)
        inside, host = self._connection()
        conn_file = self.kernel_dir / "connection.json"
        conn_file.write_text(json.dumps(inside))
        os.chown(conn_file, self.uid, self.uid)
        conn_file.chmod(0o400)

        ro_files: list[tuple[Path, str]] = [
            (self.config.boot_script, BOOT_PATH),
            (self.deps, DEPS_DIR),
        ]
        for cache in sorted(self.env.mpl_cache.glob("fontlist-*.json")):
            ro_files.append((cache, f"/tmp/matplotlib/{cache.name}"))

        def confinement(seccomp_fd: int | None) -> Confinement:
            return Confinement(
                uid=self.uid,
                gid=self.uid,
                etc=self.config.etc,
                template_env=self.env.path,
                home=self.home,
                kernel_dir=self.kernel_dir,
                cpus=self.config.caps.cpus,
                seccomp_fd=seccomp_fd,
                ro_files=tuple(ro_files),
                egress=self.config.egress,
                env={
                    "PYTHONPATH": DEPS_DIR,
                    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                    "MPLCONFIGDIR": "/tmp/matplotlib",
                    "IPYTHONDIR": "/tmp/ipython",
                    "JUPYTER_PLATFORM_DIRS": "1",
                    "JUPYTER_RUNTIME_DIR": "/tmp/jupyter",
                    "JUPYTER_CONFIG_DIR": "/tmp/jupyter",
                    "JUPYTER_DATA_DIR": "/tmp/jupyter",
                    "FRAGMENTS_OUTPUT_CAP": str(self.config.output_cap),
                    # Figures as their JSON spec (RichResult.json): the notebook renderers'
                    # HTML needs require.js and a CDN, and static images need kaleido.
                    "PLOTLY_RENDERER": "plotly_mimetype",
                },
            )

        started = await self._launch(confinement, _kernel_command(self.env))
        self._connection_info = host
        self._connect()
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        self._lock_kernel_dir()
        self.starts += 1
        log.info(
            "sandbox_kernel_started",
            sandbox_id=self.id,
            uid=self.uid,
            seconds=round(time.monotonic() - started, 3),
        )

    def _lock_kernel_dir(self) -> None:
        """Once the kernel has bound its sockets, the sandbox may no longer change that folder.

        The app (root) connects, and reconnects, to paths in it: were it still writable, a cell
        could swap a socket for a symlink to some host socket and have the app connect there.
        """
        os.chown(self.kernel_dir, 0, 0)
        self.kernel_dir.chmod(0o755)

    def _connect(self) -> None:
        self._client = _make_client(self.context, self._connection_info)
        self._client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)
        iopub = self._client.iopub_channel.socket
        self._iopub_monitor = (
            iopub.get_monitor_socket(zmq.EVENT_DISCONNECTED) if iopub is not None else None
        )

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        monitor, self._iopub_monitor = self._iopub_monitor, None
        if client is not None:
            with contextlib.suppress(Exception):
                if client.iopub_channel.socket is not None and monitor is not None:
                    client.iopub_channel.socket.disable_monitor()
                client.stop_channels()
        if monitor is not None:
            monitor.close(linger=0)

    def _iopub_dropped(self) -> bool:
        """True (once per drop) when the iopub connection was dropped since the last call."""
        monitor = self._iopub_monitor
        dropped = False
        while monitor is not None and cast(int, monitor.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            with contextlib.suppress(zmq.Again):
                monitor.recv_multipart(zmq.NOBLOCK)
            dropped = True
        return dropped

    async def _reconnect(self) -> None:
        """New sockets to the same kernel: ZeroMQ dropped iopub over an oversized message."""
        self._disconnect()
        self._connect()
        try:
            await self._wait_ready()
        except SandboxStartError:
            await self.stop()

    def _startup_failure(self) -> SandboxStartError:
        tail = self._log_tail.decode(errors="replace").strip().splitlines()[-3:]
        status = self._proc.returncode if self._proc else None
        detail = f" (exit status {status})" if status is not None else ""
        return SandboxStartError(
            f"The sandbox kernel did not start{detail}: " + (" | ".join(tail) or "no output")
        )

    async def _wait_ready(self) -> None:
        client = self._client
        assert client is not None
        deadline = time.monotonic() + self.config.start_timeout
        next_info = 0.0
        replied = False
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.returncode is not None:
                if self._drain is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._drain, 1)
                raise self._startup_failure()
            now = time.monotonic()
            if not replied and now >= next_info:
                client.kernel_info()
                next_info = now + 2.0
            if not replied:
                try:
                    msg = await client.get_shell_msg(timeout=_POLL)
                except Empty:
                    continue
                replied = msg["msg_type"] == "kernel_info_reply"
                continue
            # The reply proves the shell works; an iopub message proves we are subscribed,
            # or the first cell's output could be published before we listen.
            try:
                await client.get_iopub_msg(timeout=0.2)
                return
            except Empty:
                client.kernel_info()
                with contextlib.suppress(Empty):
                    await client.get_shell_msg(timeout=_POLL)
        raise SandboxStartError(
            f"The sandbox kernel did not answer within {self.config.start_timeout:.0f} s."
        )

    async def stop(self) -> None:
        """Kill the kernel and everything it started; the workspace stays."""
        self._disconnect()
        await super().stop()

    # ---- running -----------------------------------------------------------------------------

    def _interrupt(self) -> None:
        client = self._client
        if client is None:
            return
        msg = client.session.msg("interrupt_request", content={})
        client.control_channel.send(msg)

    async def write_files(self, files: list[tuple[str, str | bytes]]) -> ExecutionError | None:
        """Write files into the workspace from inside the sandbox (so no host path is trusted);
        bytes (data files) travel as base64."""
        payload = json.dumps(
            [
                (path, base64.b64encode(c).decode(), 1) if isinstance(c, bytes) else (path, c, 0)
                for path, c in files
            ],
            ensure_ascii=True,
        )
        code = (
            "def __fragments_write(files):\n"
            "    import base64, os\n"
            "    for path, content, binary in files:\n"
            f"        path = os.path.join({HOME!r}, path)\n"
            "        os.makedirs(os.path.dirname(path), exist_ok=True)\n"
            "        if binary:\n"
            "            with open(path, 'wb') as f:\n"
            "                f.write(base64.b64decode(content))\n"
            "            continue\n"
            "        with open(path, 'w', encoding='utf-8') as f:\n"
            "            f.write(content)\n"
            f"__fragments_write({payload})\n"
            "del __fragments_write\n"
        )
        result = await self.run(code, silent=True)
        return result.error

    async def run(self, code: str, *, silent: bool = False) -> InterpreterResult:
        """Run one cell; kernel deaths, timeouts and floods become an `error`, never a raise."""
        self.last_used = time.monotonic()
        collector = OutputCollector(self.config.output_cap + _CAP_SLACK)
        client = self._client
        assert client is not None
        assert self._proc is not None
        proc = self._proc
        before = self._usage()
        timeout = self.config.run_timeout
        loop = asyncio.get_running_loop()
        started = loop.time()
        # stop_on_error=False: an error (or the interrupt of a cancelled run) in an earlier
        # cell must not abort this one, which may already be queued behind it.
        self._iopub_dropped()  # forget drops from before this run
        msg_id = client.execute(
            code, silent=silent, store_history=False, allow_stdin=False, stop_on_error=False
        )
        stop_reason: str | None = None
        interrupted_at: float | None = None
        replied_at: float | None = None
        killed = False
        died = False
        checked_at = started
        try:
            while True:
                now = loop.time()
                if proc.returncode is not None:
                    died = True
                    break
                if now - checked_at >= _POLL:
                    checked_at = now
                    if self._usage().process_limit_hits > before.process_limit_hits:
                        # A fork bomb (or a pool far too large): stop it now, not at the limit.
                        killed = True
                        break
                if stop_reason is None and now - started >= timeout:
                    stop_reason = "timeout"
                elif stop_reason is None and collector.flooded:
                    stop_reason = "flood"
                if stop_reason is not None and interrupted_at is None:
                    self._interrupt()
                    interrupted_at = now
                grace = self.config.interrupt_grace
                if interrupted_at is not None and now - interrupted_at > grace:
                    killed = True
                    break
                if replied_at is not None and now - replied_at > _IDLE_AFTER_REPLY:
                    collector.unknown_drop = True
                    break
                try:
                    msg = await client.get_iopub_msg(timeout=_POLL)
                except Empty:
                    if replied_at is None:
                        with contextlib.suppress(Empty):
                            reply = await client.get_shell_msg(timeout=0)
                            if reply["parent_header"].get("msg_id") == msg_id:
                                replied_at = loop.time()
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if self._handle(msg, collector):
                    break
        except asyncio.CancelledError:
            # The caller went away: stop the cell so the next run does not queue behind it.
            with contextlib.suppress(Exception):
                self._interrupt()
            raise
        finally:
            self.last_used = time.monotonic()
        if self._iopub_dropped():
            collector.unknown_drop = True
        # Drain the shell reply so it does not sit in the queue for the next run.
        if replied_at is None and not died and not killed:
            with contextlib.suppress(Empty):
                await client.get_shell_msg(timeout=0.5)

        if collector.unknown_drop and not died and not killed:
            await self._reconnect()
        after = self._usage()
        limit_hit = after.process_limit_hits > before.process_limit_hits
        if died:
            await self._drain_quietly(proc)
            oom = after.oom_kills > before.oom_kills
            await self.stop()
            if oom:
                collector.error = ExecutionError(
                    name="MemoryError",
                    value=(
                        f"The sandbox ran out of memory (limit "
                        f"{_fmt_bytes(self.config.caps.memory_bytes)}); it was restarted, "
                        "so variables from earlier runs are gone."
                    ),
                )
            elif limit_hit:
                collector.error = self._process_limit_error()
            else:
                collector.error = ExecutionError(
                    name="SandboxError",
                    value=(
                        f"The sandbox process died (exit status {proc.returncode}); it was "
                        "restarted, so variables from earlier runs are gone."
                    ),
                )
        elif killed:
            await self.stop()
            if limit_hit:
                collector.error = self._process_limit_error()
            else:
                collector.error = self._stopped_error(stop_reason, restarted=True)
        else:
            if stop_reason is not None:
                collector.error = self._stopped_error(stop_reason, restarted=False)
            if limit_hit:
                # Leftover forks would keep the process table full: start afresh next time.
                await self.stop()
                collector.error = self._process_limit_error()
        collector.finish()
        return InterpreterResult(
            sandbox_id=self.id,
            template=self.env.template.id,
            stdout=collector.stdout,
            stderr=collector.stderr,
            error=collector.error,
            results=collector.results,
        )

    async def _drain_quietly(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 2)

    def _process_limit_error(self) -> ExecutionError:
        return ExecutionError(
            name="ProcessLimitError",
            value=(
                f"The sandbox reached its limit of {self.config.caps.max_processes} processes "
                "and threads; it was restarted, so variables from earlier runs are gone."
            ),
        )

    def _stopped_error(self, reason: str | None, *, restarted: bool) -> ExecutionError:
        tail = (
            "; it did not stop when interrupted, so the sandbox was restarted and variables "
            "from earlier runs are gone."
            if restarted
            else "."
        )
        if reason == "flood":
            cap = self.config.output_cap
            return ExecutionError(
                name="OutputLimitError",
                value=(
                    f"Execution stopped: the cell printed far more than the "
                    f"{cap / 2**20:.0f} MB output limit{tail}"
                ),
            )
        return ExecutionError(
            name="TimeoutError",
            value=(
                f"Execution stopped after {self.config.run_timeout:g} s, the time limit "
                f"for one run{tail}"
            ),
        )

    def _handle(self, msg: dict[str, Any], collector: OutputCollector) -> bool:
        """Fold one iopub message into the collector; True when the cell is finished."""
        kind = msg["msg_type"]
        content = msg["content"]
        if kind == "stream":
            collector.stream(str(content.get("name", "stdout")), str(content.get("text", "")))
        elif kind in ("display_data", "execute_result"):
            data = content.get("data") or {}
            if isinstance(data, dict):
                collector.display(data, main=kind == "execute_result")
        elif kind == "error":
            collector.set_error(
                str(content.get("ename", "Error")),
                str(content.get("evalue", "")),
                [str(line) for line in content.get("traceback") or []],
            )
        elif kind == "status" and content.get("execution_state") == "idle":
            return True
        return False
