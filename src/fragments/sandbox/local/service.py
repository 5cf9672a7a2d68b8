"""The local sandbox backend: confined Jupyter kernels and dev servers on this machine, one
sandbox per conversation.

A conversation (owner) keeps its sandbox, and so its variables, between runs until it is idle
for its lifetime (`sandbox_lifetime_seconds`, or longer with `extend`), asks for a restart, or
the app stops; a request without an owner gets a fresh interpreter that is killed after its run.
A sandbox that fails to launch is retried with backoff (1, 2, 4 s by default). A sandbox is
never handed to another owner, and runs on one sandbox are serialized. Each sandbox has its own
uid (`sandbox_uid_base + slot`), reserved across processes with a lock file, so two apps on one
machine never share one.

A web sandbox (Streamlit, Gradio, Next.js, Nuxt) outlives its request: its preview is served
through the app's proxy until the sandbox has been idle (no request, no proxied traffic) for its
lifetime. A conversation's edited app is rewritten in place and its dev server reloads it
(Streamlit reruns it, Gradio's reload mode swaps it in, Next.js and Nuxt hot-reload it).
`prepare` gives a conversation its sandbox before its fragment exists, serving the template's
placeholder page as a warm slot does, so that the browser can open the page while the model is
still writing and the first run is such an in-place edit too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

import structlog
import zmq
import zmq.asyncio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from fragments.config import Settings
from fragments.sandbox.local.boot import write_boot_script
from fragments.sandbox.local.build import (
    TemplateBuildError,
    TemplateEnv,
    build_template,
    ensure_traversable,
    find_env,
    is_buildable,
    node_group,
)
from fragments.sandbox.local.confine import prepare_etc
from fragments.sandbox.local.egress import EgressSetup, egress_setup, index_urls_from_environment
from fragments.sandbox.local.install import (
    Installer,
    install_npm_packages,
    install_packages,
    prepare_installer,
)
from fragments.sandbox.local.kernel import KernelSandbox
from fragments.sandbox.local.limits import Caps, limits_backend, remove_stale_cgroups
from fragments.sandbox.local.node_build import (
    build_node_template,
    node_template_dir,
)
from fragments.sandbox.local.pool import WarmPool
from fragments.sandbox.local.sandbox_base import KernelConfig, SandboxStartError
from fragments.sandbox.local.seccomp import seccomp_filter
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.local.web_boot import write_web_boot
from fragments.sandbox.service import (
    Phase,
    PhaseCallback,
    PreparedSandbox,
    Program,
    SandboxUnavailable,
    prepare_program,
)
from fragments.sandbox.templates import TEMPLATES, Template
from fragments.schemas import ExecutionError, Fragment, InterpreterResult, WebResult

log = structlog.get_logger(__name__)

# ZeroMQ refuses (and disconnects) an inbound message above this size: a hostile cell cannot
# make the app buffer an arbitrarily large single output message.
_MIN_MAX_MESSAGE = 16 * 1024 * 1024
# Ids of closed sandboxes remembered so their preview URLs say "expired" rather than "unknown".
_GONE_MEMORY = 4096

Sandbox = KernelSandbox | WebSandbox


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


def _runnable(template: Template) -> bool:
    return is_buildable(template) or template.strategy.build == "node"


def _unmount_below(path: Path) -> None:
    """Lazily unmount what a dead app left mounted under `path` (Node project overlays)."""
    prefix = str(path) + "/"
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, SandboxStartError) and not exc.app_failed


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("sandbox_start_retry", attempt=state.attempt_number, error=str(error)[:300])


def web_unavailable(template: Template) -> WebResult:
    """The answer for templates whose live preview this backend cannot serve yet."""
    return WebResult(
        sandbox_id=None,
        template=template.id,
        url=None,
        error=ExecutionError(
            name="NotAvailable",
            value=(f"Live previews of {template.name} apps are not available in local sandboxes."),
        ),
    )


def _check_open(sandbox: KernelSandbox | WebSandbox, waiting: str) -> None:
    """A sandbox reaped or evicted while its caller waited for its lock cannot be used."""
    if sandbox.closed:
        raise SandboxUnavailable(
            f"The sandbox was closed while {waiting}; please try again.",
            headers={"Retry-After": "1"},
        )


class LocalSandboxService:
    """SandboxService over confined local kernels (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = False
        self._setup_lock = asyncio.Lock()
        self._build_lock = asyncio.Lock()
        self._acquire_lock = asyncio.Lock()
        self._by_id: dict[str, Sandbox] = {}
        self._by_owner: dict[str, Sandbox] = {}
        self._gone: dict[str, None] = {}
        self._web_boot: Path | None = None
        self._installer: Installer | None = None
        # Packages installed per sandbox id, so a conversation's rerun does not install again.
        self._installed: dict[str, set[str]] = {}
        # Idle lifetimes raised with `extend`; the others use sandbox_lifetime_seconds.
        self._lifetimes: dict[str, float] = {}
        self.pool: WarmPool[Sandbox] = WarmPool(
            settings.sandbox_pool_sizes, self._make_warm, self._close
        )
        self._users: dict[str, int] = {}
        self._slots: dict[int, IO[str]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._context: zmq.asyncio.Context | None = None
        self._config: KernelConfig | None = None
        self._egress: EgressSetup | None = None
        self._checked_at = 0.0
        self._closed = False
        self.instance = f"{os.getpid()}-{secrets.token_hex(3)}"

    # ---- set-up ------------------------------------------------------------------------------

    @property
    def run_root(self) -> Path:
        return self.settings.sandbox_root / "run"

    async def _setup(self) -> KernelConfig:
        if self._config is not None:
            return self._config
        async with self._setup_lock:
            if self._config is None:
                config = await asyncio.to_thread(self._setup_sync)
                if self._egress is not None:
                    # Listening before any sandbox (or install) can try to use them.
                    try:
                        await self._egress.start()
                    except OSError as exc:
                        raise SandboxUnavailable(
                            f"The sandbox egress proxy cannot listen: {exc}"
                        ) from exc
                self._config = config
                self._context = self._make_context()
                self._reaper = asyncio.create_task(self._reap_forever())
                self.pool.start()
            return self._config

    def _setup_sync(self) -> KernelConfig:
        s = self.settings
        root = s.sandbox_root
        try:
            ensure_traversable(root)
        except TemplateBuildError as exc:
            raise SandboxUnavailable(str(exc)) from exc
        root.chmod(0o755)
        for sub in ("run", "slots"):
            (root / sub).mkdir(mode=0o711, exist_ok=True)
        self._remove_stale()
        run_root = self.run_root / self.instance
        run_root.mkdir(mode=0o711)
        etc = prepare_etc(root)
        boot = write_boot_script(root)
        self._web_boot = write_web_boot(root)
        self._egress = egress_setup(
            run_root,
            mode=s.sandbox_egress,
            registry_hosts=[h for h in s.sandbox_registry_hosts.split(",") if h],
            index_urls=[s.sandbox_pip_index, *index_urls_from_environment()],
        )
        try:
            # The uid just past the probe's: never a sandbox's, owns the install cache.
            self._installer = prepare_installer(
                root,
                s.sandbox_uid_base + s.sandbox_max_count + 1,
                s.sandbox_install_timeout_seconds,
                s.sandbox_pip_index,
                self._egress.installs,
            )
        except TemplateBuildError as exc:
            log.warning("sandbox_installer_unavailable", error=str(exc))
        seccomp = seccomp_filter(root) if s.sandbox_seccomp else None
        backend = limits_backend() if s.sandbox_limits == "auto" else s.sandbox_limits
        log.info(
            "sandbox_backend_ready",
            root=str(root),
            limits=backend,
            seccomp=seccomp is not None,
        )
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
            egress=self._egress.code,
        )
        if s.env == "production":
            self._require_protections(config)
        return config

    def _require_protections(self, config: KernelConfig) -> None:
        """Production refuses local sandboxes missing an essential protection: namespaces
        (network, a read-only view of the host), a non-root uid, memory and process caps."""
        if config.uid_base < 1000:
            raise SandboxUnavailable(
                "Refusing local sandboxes in production: FRAGMENTS_SANDBOX_UID_BASE must give "
                "each sandbox a non-system uid (1000 or more)."
            )
        try:
            self._probe_confinement(config)
        except SandboxUnavailable as exc:
            raise SandboxUnavailable(
                f"Refusing local sandboxes in production: {exc.detail} (namespaces, a read-only "
                "view of the host and no network need bubblewrap)."
            ) from exc
        if config.caps.memory_bytes <= 0 or config.caps.max_processes <= 0:
            raise SandboxUnavailable(
                "Refusing local sandboxes in production without memory and process caps."
            )

    def _remove_stale(self) -> None:
        """Folders and cgroups left by app processes that died without cleaning up."""
        for path in self.run_root.iterdir():
            if not _instance_alive(path.name):
                _unmount_below(path)
                shutil.rmtree(path, ignore_errors=True)
        remove_stale_cgroups(lambda name: not _instance_alive(name))

    def _make_context(self) -> zmq.asyncio.Context:
        context = zmq.asyncio.Context()
        max_message = max(_MIN_MAX_MESSAGE, 4 * self.settings.sandbox_output_cap_bytes)
        context.setsockopt(zmq.MAXMSGSIZE, max_message)
        # ipc sockets do not exist until the kernel binds them: retry connecting quickly.
        context.setsockopt(zmq.RECONNECT_IVL, 10)
        context.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        context.setsockopt(zmq.LINGER, 0)
        return context

    # ---- slots (one uid per sandbox) ----------------------------------------------------------

    def _take_slot(self) -> int | None:
        slots_dir = self.settings.sandbox_root / "slots"
        for slot in range(self.settings.sandbox_max_count):
            if slot in self._slots:
                continue
            handle = open(slots_dir / f"{self.settings.sandbox_uid_base + slot}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self._slots[slot] = handle
            return slot
        return None

    def _release_slot(self, slot: int) -> None:
        handle = self._slots.pop(slot, None)
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # ---- templates ---------------------------------------------------------------------------

    @property
    def node_gid(self) -> int:
        return node_group(self.settings)

    def _find_env(self, template: Template) -> TemplateEnv | None:
        if template.strategy.build == "node":
            path = node_template_dir(self.settings, template.id, gid=self.node_gid)
            return None if path is None else TemplateEnv(template, path)
        return find_env(self.settings, template)

    def _build_env(self, template: Template) -> TemplateEnv:
        if template.strategy.build == "node":
            path = build_node_template(
                self.settings, template.id, gid=self.node_gid, group_writable=True
            )
            return TemplateEnv(template, path)
        return build_template(self.settings, template.id)

    async def _ensure_env(self, template: Template, phase: PhaseCallback) -> TemplateEnv:
        env = self._find_env(template)
        if env is not None:
            return env
        async with self._build_lock:
            env = self._find_env(template)
            if env is not None:
                return env
            await phase("installing")
            log.info("sandbox_template_build", template=template.id)
            try:
                return await asyncio.to_thread(self._build_env, template)
            except TemplateBuildError as exc:
                raise SandboxUnavailable(
                    f"The {template.id} sandbox environment could not be built: {exc}"
                ) from exc

    # ---- sandboxes ---------------------------------------------------------------------------

    async def _acquire(
        self, owner: str | None, env: TemplateEnv, restart: bool, config: KernelConfig
    ) -> Sandbox:
        async with self._acquire_lock:
            if self._closed:
                raise SandboxUnavailable("The sandbox service is shutting down.")
            if owner is not None:
                current = self._by_owner.get(owner)
                if current is not None and (
                    restart or current.closed or current.env.path != env.path
                ):
                    self._forget(current)
                    # Closed in the background: a run still in it ends with a clear error.
                    task = asyncio.create_task(self._close(current))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                    current = None
                if current is not None:
                    self._users[current.id] += 1
                    return current
            pooled = self.pool.take(env.template.id, env.path)
            if pooled is not None:
                pooled.owner = owner
                self._register(pooled)
                return pooled
            slot = self._take_slot()
            if slot is None:
                victim = self._least_recent_idle()
                if victim is not None:
                    self._forget(victim)
                    await self._close(victim)
                    slot = self._take_slot()
            if slot is None:
                raise SandboxUnavailable(
                    "Every sandbox is busy right now; please try again in a few seconds.",
                    headers={"Retry-After": "5"},
                )
            sandbox = self._new_sandbox(owner, slot, env, config)
            self._register(sandbox)
            return sandbox

    def _register(self, sandbox: Sandbox) -> None:
        self._by_id[sandbox.id] = sandbox
        self._users[sandbox.id] = 1
        if sandbox.owner is not None:
            self._by_owner[sandbox.owner] = sandbox

    async def _make_warm(self, template_id: str) -> Sandbox | None:
        """A started sandbox for the pool, or None when its template or a slot is missing."""
        template = TEMPLATES[template_id]
        env = await asyncio.to_thread(self._find_env, template)
        config = self._config
        if env is None or config is None or not _runnable(template):
            return None
        async with self._acquire_lock:
            slot = None if self._closed else self._take_slot()
        if slot is None:
            return None
        sandbox = self._new_sandbox(None, slot, env, config)
        try:
            if isinstance(sandbox, KernelSandbox):
                await sandbox.start()
                warm = await sandbox.run(template.strategy.warm_up, silent=True)
                if warm.error is not None:
                    raise SandboxStartError(f"{warm.error.name}: {warm.error.value}")
            else:
                await self._serve_placeholder(sandbox)
        except BaseException:
            await self._close(sandbox)
            raise
        return sandbox

    async def _serve_placeholder(self, sandbox: WebSandbox) -> None:
        """Start a web sandbox on its template's placeholder page (warm slots, `prepare`)."""
        strategy = sandbox.env.template.strategy
        if strategy.placeholder is not None:
            await sandbox.write_files([(sandbox.entry, strategy.placeholder)])
        # A Node slot serves the scaffold's page, compiled by `start` (its first GET).
        await sandbox.start()
        if strategy.renders_placeholder:
            await sandbox.warm_streamlit()

    def _new_sandbox(
        self, owner: str | None, slot: int, env: TemplateEnv, config: KernelConfig
    ) -> Sandbox:
        sandbox_id = secrets.token_hex(8)
        if env.template.runtime == "web":
            return WebSandbox(
                sandbox_id=sandbox_id,
                owner=owner,
                slot=slot,
                env=env,
                config=config,
                web_boot=self._web_boot,
                node_gid=self.node_gid,
            )
        return KernelSandbox(
            sandbox_id=sandbox_id,
            owner=owner,
            slot=slot,
            env=env,
            config=config,
            context=self._require_context(),
        )

    def _require_context(self) -> zmq.asyncio.Context:
        assert self._context is not None
        return self._context

    def _least_recent_idle(self) -> Sandbox | None:
        idle = [s for s in self._by_id.values() if self._users.get(s.id, 0) == 0]
        return min(idle, key=lambda s: s.last_used, default=None)

    def _forget(self, sandbox: Sandbox) -> None:
        self._by_id.pop(sandbox.id, None)
        self._gone[sandbox.id] = None
        while len(self._gone) > _GONE_MEMORY:
            del self._gone[next(iter(self._gone))]
        if sandbox.owner is not None and self._by_owner.get(sandbox.owner) is sandbox:
            del self._by_owner[sandbox.owner]

    async def _close(self, sandbox: Sandbox) -> None:
        # Wait for a run in progress only briefly: closing kills it, which ends it anyway.
        try:
            await asyncio.shield(sandbox.close())
        except Exception:
            log.exception("sandbox_close_failed", sandbox_id=sandbox.id)
        finally:
            self._users.pop(sandbox.id, None)
            self._installed.pop(sandbox.id, None)
            self._lifetimes.pop(sandbox.id, None)
            self._release_slot(sandbox.slot)

    async def _reap_forever(self) -> None:
        lifetime = self.settings.sandbox_lifetime_seconds
        interval = max(0.5, min(30.0, lifetime / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            expired = [
                s
                for s in list(self._by_id.values())
                if self._users.get(s.id, 0) == 0
                and now - s.last_used > self._lifetimes.get(s.id, lifetime)
            ]
            for sandbox in expired:
                idle = round(now - sandbox.last_used)
                log.info("sandbox_reaped", sandbox_id=sandbox.id, idle_seconds=idle)
                self._forget(sandbox)
                await self._close(sandbox)

    # ---- the protocol ------------------------------------------------------------------------

    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
    ) -> InterpreterResult | WebResult:
        """Run a fragment in the owner's sandbox (see the module docstring)."""
        program = prepare_program(fragment)
        if not _runnable(program.template):
            return web_unavailable(program.template)

        async def phase(name: Phase) -> None:
            if on_phase is not None:
                await on_phase(name)

        await phase("acquiring")
        config = await self._setup()
        env = await self._ensure_env(program.template, phase)
        sandbox = await self._acquire(owner, env, restart, config)
        if isinstance(sandbox, WebSandbox):
            try:
                return await self._serve(sandbox, program, phase)
            finally:
                # Not while the page loads: see pool.py on refills.
                delay = self.settings.sandbox_pool_refill_delay_seconds
                self.pool.refill(program.template.id, delay)
        try:
            async with sandbox.lock:
                _check_open(sandbox, "the run waited")
                if not sandbox.alive:
                    await phase("starting")
                    try:
                        await self._start(sandbox)
                    except SandboxStartError as exc:
                        log.error("sandbox_start_failed", sandbox_id=sandbox.id, error=str(exc))
                        raise SandboxUnavailable(
                            f"The sandbox could not start: {exc}", headers={"Retry-After": "5"}
                        ) from exc
                error = await self._install(sandbox, program, phase)
                if error is not None:
                    return InterpreterResult(
                        sandbox_id=sandbox.id, template=program.template.id, error=error
                    )
                await phase("running")
                if program.files:
                    error = await sandbox.write_files(list(program.files))
                    if error is not None:
                        return InterpreterResult(
                            sandbox_id=sandbox.id, template=program.template.id, error=error
                        )
                    if not sandbox.alive:
                        await sandbox.start()
                return await sandbox.run(program.code)
        finally:
            self._release(sandbox)
            if owner is None:
                self._forget(sandbox)
                await self._close(sandbox)
            self.pool.refill(program.template.id)  # the result is out: see pool.py on refills

    def _release(self, sandbox: KernelSandbox | WebSandbox) -> None:
        """One user fewer of `sandbox` (taken by `_acquire`); an unused one may be evicted."""
        self._users[sandbox.id] = self._users.get(sandbox.id, 1) - 1

    async def prepare(self, template: Template, owner: str) -> PreparedSandbox | None:
        """The owner's sandbox for `template`, taken from the pool or started on the template's
        placeholder (an interpreter: its kernel started), without running fragment code. The
        owner's live sandbox of that template is returned as it is, so preparing is idempotent
        and never undoes a run; None when this backend cannot run the template."""
        if not _runnable(template):
            return None

        async def quiet(_: Phase) -> None:
            return None

        config = await self._setup()
        env = await self._ensure_env(template, quiet)
        sandbox = await self._acquire(owner, env, False, config)
        try:
            async with sandbox.lock:
                _check_open(sandbox, "it was prepared")
                if not sandbox.alive:
                    try:
                        if isinstance(sandbox, WebSandbox):
                            await self._serve_placeholder(sandbox)
                        else:
                            await self._start(sandbox)
                    except SandboxStartError as exc:
                        log.warning("sandbox_prepare_failed", sandbox_id=sandbox.id)
                        self._forget(sandbox)
                        await self._close(sandbox)
                        raise SandboxUnavailable(
                            f"The sandbox could not start: {exc}", headers={"Retry-After": "5"}
                        ) from exc
                elif isinstance(sandbox, WebSandbox) and not sandbox.serving:
                    await sandbox.wait_ready()
                sandbox.last_used = time.monotonic()
                url = self.preview_url(sandbox) if isinstance(sandbox, WebSandbox) else None
                return PreparedSandbox(sandbox.id, template.id, url)
        finally:
            self._release(sandbox)
            # A pool slot taken now is owed back; later than a run's, as the page loads now
            # while the model is still writing.
            self.pool.refill(template.id, self.settings.sandbox_pool_refill_delay_seconds)

    async def _serve(
        self, sandbox: WebSandbox, program: Program, phase: PhaseCallback
    ) -> WebResult:
        """Write the app into a web sandbox and (re)start its server; the sandbox lives on."""
        template = program.template
        try:
            async with sandbox.lock:
                _check_open(sandbox, "the run waited")
                files = list(program.files) or [(program.entry, program.code)]
                if sandbox.alive and sandbox.entry != program.entry:
                    await sandbox.stop()  # the server runs another file
                sandbox.entry = program.entry
                # Gradio in reload mode says when it has swapped the new code in: counted from here.
                reloads = (sandbox.reloads, sandbox.reload_failures)
                if sandbox.node:
                    # npm installs into the project overlay, which writing the files mounts.
                    error = await sandbox.write_files(files)
                    if error is None:
                        error = await self._install(sandbox, program, phase)
                else:
                    # Packages first: a Python dev server reruns the new file as soon as it lands.
                    await asyncio.to_thread(sandbox.prepare)
                    error = await self._install(sandbox, program, phase)
                    if error is None:
                        error = await sandbox.write_files(files)
                if error is not None:
                    return WebResult(
                        sandbox_id=sandbox.id, template=template.id, url=None, error=error
                    )
                # Every dev server reloads a rewritten file by itself; some reloads are waited
                # for, so that the URL answered serves the new code (or its error).
                waits = template.strategy.waits_for_reload
                if sandbox.alive and sandbox.serving and waits:
                    error = await sandbox.wait_reload(*reloads)
                    if error is not None:
                        return WebResult(
                            sandbox_id=sandbox.id, template=template.id, url=None, error=error
                        )
                if not sandbox.alive or not sandbox.serving:
                    await phase("starting")
                    try:
                        if sandbox.alive:
                            await sandbox.wait_ready()
                        else:
                            await self._start(sandbox)
                    except SandboxStartError as exc:
                        log.warning("sandbox_web_start_failed", sandbox_id=sandbox.id)
                        self._forget(sandbox)
                        await self._close(sandbox)
                        return WebResult(
                            sandbox_id=None,
                            template=template.id,
                            url=None,
                            error=ExecutionError(name="SandboxStartError", value=str(exc)),
                        )
                await phase("running")
                sandbox.last_used = time.monotonic()
                return WebResult(
                    sandbox_id=sandbox.id, template=template.id, url=self.preview_url(sandbox)
                )
        finally:
            self._release(sandbox)

    async def _install(
        self, sandbox: Sandbox, program: Program, phase: PhaseCallback
    ) -> ExecutionError | None:
        """Install the program's packages this sandbox lacks; the installer's error, if any."""
        done = self._installed.setdefault(sandbox.id, set())
        missing = [d for d in program.dependencies if d not in done]
        if not missing:
            return None
        if self._installer is None:
            return ExecutionError(
                name="InstallError",
                value="Additional packages cannot be installed here: uv was not found.",
            )
        assert self._config is not None
        await phase("installing")
        if isinstance(sandbox, WebSandbox) and sandbox.node:
            error = await install_npm_packages(
                sandbox_id=sandbox.id,
                root=sandbox.root,
                project=sandbox.merged,
                env=sandbox.env,
                gid=self.node_gid,
                packages=missing,
                config=self._config,
                installer=self._installer,
            )
        else:
            error = await install_packages(
                sandbox_id=sandbox.id,
                root=sandbox.root,
                deps=sandbox.deps,
                env=sandbox.env,
                packages=missing,
                config=self._config,
                installer=self._installer,
            )
        if error is None:
            done.update(missing)
        return error

    def preview_url(self, sandbox: WebSandbox) -> str:
        """`<scheme>://<port>-<sandbox id>.<preview domain>/` (the E2B pattern)."""
        s = self.settings
        return f"{s.preview_scheme}://{sandbox.port}-{sandbox.id}.{s.resolved_preview_domain}/"

    def preview_socket(self, sandbox_id: str, port: int) -> Path | None:
        """The unix socket serving this sandbox's port, or None; counts as activity."""
        sandbox = self._by_id.get(sandbox_id)
        if not isinstance(sandbox, WebSandbox) or sandbox.port != port or sandbox.closed:
            return None
        sandbox.last_used = time.monotonic()
        return sandbox.socket

    async def _start(self, sandbox: Sandbox) -> None:
        """Start a sandbox, retrying launch failures (not the app's own) with backoff."""
        s = self.settings
        backoff = s.sandbox_retry_backoff_seconds
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(s.sandbox_start_retries + 1),
            wait=wait_exponential(multiplier=backoff, min=backoff, max=4 * backoff),
            retry=retry_if_exception(_retryable),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                await sandbox.start()

    async def extend(self, sandbox_id: str, seconds: float) -> float | None:
        """Let a sandbox stay idle `seconds` (up to sandbox_max_lifetime_seconds) before it is
        reaped; the lifetime granted, or None when no live sandbox has this id."""
        sandbox = self._by_id.get(sandbox_id)
        if sandbox is None:
            return None
        granted = max(1.0, min(seconds, self.settings.sandbox_max_lifetime_seconds))
        self._lifetimes[sandbox_id] = granted
        sandbox.last_used = time.monotonic()
        return granted

    async def kill(self, sandbox_id: str) -> bool:
        """Kill a sandbox now (its preview URL then answers 410); False if it was not live."""
        sandbox = self._by_id.get(sandbox_id)
        if sandbox is None:
            return False
        self._forget(sandbox)
        await self._close(sandbox)
        return True

    def preview_expired(self, sandbox_id: str) -> bool:
        """True for a sandbox this process closed (recently enough to remember)."""
        return sandbox_id in self._gone

    async def check(self) -> None:
        """Raise unless a confined process can start and the interpreter template is usable."""
        config = await self._setup()
        now = time.monotonic()
        if now - self._checked_at < 10:
            return
        await asyncio.to_thread(self._probe_confinement, config)
        template = next(t for t in TEMPLATES.values() if t.runtime == "interpreter")
        if find_env(self.settings, template) is None:
            python = self.settings.sandbox_python
            if not os.access(python, os.X_OK):
                raise SandboxUnavailable(
                    f"the interpreter template is not built and {python} is missing"
                )
            if shutil.which("uv") is None:
                raise SandboxUnavailable("the interpreter template is not built and uv is missing")
        self._checked_at = now

    def _probe_confinement(self, config: KernelConfig) -> None:
        # The uid just past the slots' range is never a sandbox's: a probe cannot disturb one.
        uid = str(config.uid_base + self.settings.sandbox_max_count)
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

    async def aclose(self) -> None:
        """Kill every sandbox and release their uids, caps and folders."""
        self._closed = True
        await self.pool.aclose()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        sandboxes = list(self._by_id.values())
        self._by_id.clear()
        self._by_owner.clear()
        await asyncio.gather(
            *(self._close(s) for s in sandboxes), *self._background, return_exceptions=True
        )
        for slot in list(self._slots):
            self._release_slot(slot)
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        if self._egress is not None:
            await self._egress.aclose()
        if self._config is not None:
            await asyncio.to_thread(shutil.rmtree, self._config.run_root, True)

    # ---- introspection (tests, bench) --------------------------------------------------------

    def sandbox_for(self, owner: str) -> Sandbox | None:
        return self._by_owner.get(owner)

    @property
    def sandboxes(self) -> list[Sandbox]:
        return list(self._by_id.values())
