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
import os
import secrets
import shutil
import time
from pathlib import Path

import structlog
import zmq.asyncio

from fragments.config import Settings
from fragments.resilience import BreakerConfig, BreakerOpen, CircuitBreaker
from fragments.sandbox.local.build import TemplateEnv, find_env
from fragments.sandbox.local.envs import TemplateEnvs, runnable
from fragments.sandbox.local.extras import ExtraPackages
from fragments.sandbox.local.host import HostSetup, make_context, probe_uid, set_up_host
from fragments.sandbox.local.kernel import KernelSandbox
from fragments.sandbox.local.pool import WarmPool
from fragments.sandbox.local.previews import (
    preview_url,
    serve_app,
    serve_placeholder,
    web_unavailable,
)
from fragments.sandbox.local.probe import probe_confinement
from fragments.sandbox.local.registry import Sandbox, SandboxRegistry
from fragments.sandbox.local.runs import run_in_kernel, start_prepared, start_with_retries
from fragments.sandbox.local.sandbox_base import KernelConfig, SandboxStartError
from fragments.sandbox.local.slots import SlotLocks
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.service import (
    DataFile,
    Phase,
    PhaseCallback,
    PreparedSandbox,
    Program,
    SandboxUnavailable,
    prepare_program,
)
from fragments.sandbox.templates import TEMPLATES, Template
from fragments.sandbox.templates.runtimes import runtime_of
from fragments.schemas import ExecutionError, Fragment, InterpreterResult, WebResult

log = structlog.get_logger(__name__)


def _launch_failed(exc: BaseException) -> bool:
    return isinstance(exc, SandboxStartError) and not exc.app_failed


class LocalSandboxService:
    """SandboxService over confined local kernels and dev servers (see the module docstring):
    a facade over the host set-up, slots, registry, pool, runs and previews."""

    def __init__(self, settings: Settings, *, breaker: CircuitBreaker | None = None) -> None:
        self.settings = settings
        # Sandbox creation fails fast while this is open (shared by instances via Redis when
        # the factory passes the app's; a breaker of this process's own otherwise).
        self.breaker = breaker or CircuitBreaker(
            "sandbox:local", BreakerConfig.from_settings(settings)
        )
        self._setup_lock = asyncio.Lock()
        self._acquire_lock = asyncio.Lock()
        # Cold starts are CPU-bound (a kernel and its pre-imports, a dev server): a burst of
        # them started all at once slows every one past its start timeout, and the failed
        # starts then open the creation breaker. Past one per CPU they wait their turn instead.
        self._starts = asyncio.Semaphore(
            settings.sandbox_concurrent_starts or max(1, os.cpu_count() or 1)
        )
        # Starts under way now, and starts waiting for their turn (read by tests and logs).
        self.starting = 0
        self.waiting_to_start = 0
        self.envs = TemplateEnvs(settings)
        self.registry = SandboxRegistry(settings.sandbox_lifetime_seconds)
        self.slots = SlotLocks(
            settings.sandbox_root / "slots", settings.sandbox_uid_base, settings.sandbox_max_count
        )
        self.extras = ExtraPackages(self.envs.node_gid)
        self.pool: WarmPool[Sandbox] = WarmPool(
            settings.sandbox_pool_sizes, self._make_warm, self._close
        )
        self.host: HostSetup | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._context: zmq.asyncio.Context | None = None
        self._checked_at = 0.0
        self._closed = False
        self.instance = f"{os.getpid()}-{secrets.token_hex(3)}"

    @property
    def node_gid(self) -> int:
        return self.envs.node_gid

    def pool_slots(self) -> dict[tuple[str, str], int]:
        """Sandboxes per (template, state), read by the metrics at scrape time: `idle` warm
        ones waiting in the pool, `busy` live ones that belong to a conversation or a run."""
        slots = {(template, "idle"): self.pool.ready(template) for template in self.pool.sizes}
        for sandbox in self.registry.by_id.values():
            key = (sandbox.env.template.id, "busy")
            slots[key] = slots.get(key, 0) + 1
        return slots

    # ---- set-up ------------------------------------------------------------------------------

    async def _setup(self) -> KernelConfig:
        if self.host is not None:
            return self.host.config
        async with self._setup_lock:
            if self.host is None:
                host = await asyncio.to_thread(set_up_host, self.settings, self.instance)
                # Listening before any sandbox (or install) can try to use them.
                try:
                    await host.egress.start()
                except OSError as exc:
                    await host.egress.aclose()
                    raise SandboxUnavailable(
                        f"The sandbox egress proxy cannot listen: {exc}"
                    ) from exc
                self.host = host
                self._context = make_context(self.settings.sandbox_output_cap_bytes)
                self._reaper = asyncio.create_task(self._reap_forever())
                self.pool.start()
            return self.host.config

    # ---- sandboxes ---------------------------------------------------------------------------

    async def _acquire(
        self, owner: str | None, env: TemplateEnv, restart: bool, config: KernelConfig
    ) -> Sandbox:
        async with self._acquire_lock:
            if self._closed:
                raise SandboxUnavailable("The sandbox service is shutting down.")
            if owner is not None:
                current = self.registry.by_owner.get(owner)
                if current is not None and (
                    restart or current.closed or current.env.path != env.path
                ):
                    self.registry.forget(current)
                    # Closed in the background: a run still in it ends with a clear error.
                    task = asyncio.create_task(self._close(current))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                    current = None
                if current is not None:
                    self.registry.use(current)
                    return current
            pooled = self.pool.take(env.template.id, env.path)
            if pooled is not None:
                pooled.owner = owner
                self.registry.register(pooled)
                return pooled
            slot = self.slots.take()
            if slot is None:
                victim = self.registry.least_recent_idle()
                if victim is not None:
                    await self.discard(victim)
                    slot = self.slots.take()
            if slot is None:
                raise SandboxUnavailable(
                    "Every sandbox is busy right now; please try again in a few seconds.",
                    headers={"Retry-After": "5"},
                )
            sandbox = self._new_sandbox(owner, slot, env, config)
            self.registry.register(sandbox)
            return sandbox

    async def _make_warm(self, template_id: str) -> Sandbox | None:
        """A started sandbox for the pool, or None when its template or a slot is missing."""
        template = TEMPLATES[template_id]
        env = await asyncio.to_thread(self.envs.find, template)
        config = self.host.config if self.host is not None else None
        if env is None or config is None or not runnable(template):
            return None
        async with self._acquire_lock:
            slot = None if self._closed else self.slots.take()
        if slot is None:
            return None
        sandbox = self._new_sandbox(None, slot, env, config)
        try:
            if isinstance(sandbox, KernelSandbox):
                await sandbox.start()
                warm = await sandbox.run(runtime_of(template).warm_up, silent=True)
                if warm.error is not None:
                    raise SandboxStartError(f"{warm.error.name}: {warm.error.value}")
            else:
                await serve_placeholder(sandbox)
        except BaseException:
            await self._close(sandbox)
            raise
        return sandbox

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
                web_boot=self.host.web_boot if self.host is not None else None,
                node_gid=self.node_gid,
            )
        assert self._context is not None  # set with the host, before any sandbox exists
        return KernelSandbox(
            sandbox_id=sandbox_id,
            owner=owner,
            slot=slot,
            env=env,
            config=config,
            context=self._context,
        )

    async def _close(self, sandbox: Sandbox) -> None:
        # Wait for a run in progress only briefly: closing kills it, which ends it anyway.
        try:
            await asyncio.shield(sandbox.close())
        except Exception:
            log.exception("sandbox_close_failed", sandbox_id=sandbox.id)
        finally:
            self.registry.closed(sandbox.id)
            self.extras.forget(sandbox.id)
            self.slots.release(sandbox.slot)

    async def _reap_forever(self) -> None:
        lifetime = self.settings.sandbox_lifetime_seconds
        interval = max(0.5, min(30.0, lifetime / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for sandbox in self.registry.expired(now):
                idle = round(now - sandbox.last_used)
                log.info("sandbox_reaped", sandbox_id=sandbox.id, idle_seconds=idle)
                await self.discard(sandbox)

    # ---- what runs and previews ask of the service (runs.SandboxHooks) -------------------------

    async def start_sandbox(self, sandbox: Sandbox) -> None:
        """Start a sandbox under the creation breaker: a launch that still fails after its
        retries counts (an app crashing on its own code does not); while the breaker is open
        no launch is tried and the caller's fallback answers at once."""
        try:
            self.waiting_to_start += 1
            try:
                await self._starts.acquire()
            finally:
                self.waiting_to_start -= 1
            self.starting += 1
            try:
                async with self.breaker.guard(is_failure=_launch_failed):
                    await start_with_retries(sandbox, self.settings)
            finally:
                self.starting -= 1
                self._starts.release()
        except BreakerOpen as exc:
            raise SandboxStartError(
                "Sandboxes cannot be started right now (recent starts failed); "
                f"tried again in about {max(1, round(exc.retry_after))} s."
            ) from exc

    async def install_extras(
        self, sandbox: Sandbox, program: Program, phase: PhaseCallback
    ) -> ExecutionError | None:
        assert self.host is not None  # a sandbox exists only once the host is set up
        return await self.extras.install(
            sandbox, program, phase, installer=self.host.installer, config=self.host.config
        )

    async def discard(self, sandbox: Sandbox) -> None:
        """Forget a sandbox and close it."""
        self.registry.forget(sandbox)
        await self._close(sandbox)

    async def serve_placeholder(self, sandbox: WebSandbox) -> None:
        await serve_placeholder(sandbox)

    # ---- the protocol ------------------------------------------------------------------------

    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
        data_files: tuple[DataFile, ...] = (),
    ) -> InterpreterResult | WebResult:
        """Run a fragment in the owner's sandbox (see the module docstring)."""
        program = prepare_program(fragment, data_files)
        if not runnable(program.template):
            return web_unavailable(program.template)

        async def phase(name: Phase) -> None:
            if on_phase is not None:
                await on_phase(name)

        await phase("acquiring")
        config = await self._setup()
        env = await self.envs.ensure(program.template, phase)
        sandbox = await self._acquire(owner, env, restart, config)
        if isinstance(sandbox, WebSandbox):
            try:
                return await serve_app(sandbox, program, phase, self, self.settings)
            finally:
                self.registry.release(sandbox)
                # Not while the page loads: see pool.py on refills.
                delay = self.settings.sandbox_pool_refill_delay_seconds
                self.pool.refill(program.template.id, delay)
        try:
            return await run_in_kernel(sandbox, program, phase, self)
        finally:
            self.registry.release(sandbox)
            if owner is None:
                await self.discard(sandbox)
            self.pool.refill(program.template.id)  # the result is out: see pool.py on refills

    async def prepare(self, template: Template, owner: str) -> PreparedSandbox | None:
        """The owner's sandbox for `template`, taken from the pool or started on the template's
        placeholder (an interpreter: its kernel started), without running fragment code. The
        owner's live sandbox of that template is returned as it is, so preparing is idempotent
        and never undoes a run; None when this backend cannot run the template."""
        if not runnable(template):
            return None

        async def quiet(_: Phase) -> None:
            return None

        config = await self._setup()
        env = await self.envs.ensure(template, quiet)
        sandbox = await self._acquire(owner, env, False, config)
        try:
            await start_prepared(sandbox, self)
            url = self.preview_url(sandbox) if isinstance(sandbox, WebSandbox) else None
            return PreparedSandbox(sandbox.id, template.id, url)
        finally:
            self.registry.release(sandbox)
            # A pool slot taken now is owed back; later than a run's, as the page loads now
            # while the model is still writing.
            self.pool.refill(template.id, self.settings.sandbox_pool_refill_delay_seconds)

    def preview_url(self, sandbox: WebSandbox) -> str:
        return preview_url(self.settings, sandbox)

    def preview_socket(self, sandbox_id: str, port: int) -> Path | None:
        """The unix socket serving this sandbox's port, or None; counts as activity."""
        sandbox = self.registry.by_id.get(sandbox_id)
        if not isinstance(sandbox, WebSandbox) or sandbox.port != port or sandbox.closed:
            return None
        sandbox.last_used = time.monotonic()
        return sandbox.socket

    def preview_expired(self, sandbox_id: str) -> bool:
        """True for a sandbox this process closed (recently enough to remember)."""
        return self.registry.is_gone(sandbox_id)

    async def extend(self, sandbox_id: str, seconds: float) -> float | None:
        """Let a sandbox stay idle `seconds` (up to sandbox_max_lifetime_seconds) before it is
        reaped; the lifetime granted, or None when no live sandbox has this id."""
        granted = max(1.0, min(seconds, self.settings.sandbox_max_lifetime_seconds))
        return granted if self.registry.extend(sandbox_id, granted) else None

    async def kill(self, sandbox_id: str) -> bool:
        """Kill a sandbox now (its preview URL then answers 410); False if it was not live."""
        sandbox = self.registry.by_id.get(sandbox_id)
        if sandbox is None:
            return False
        await self.discard(sandbox)
        return True

    async def check(self) -> None:
        """Raise unless a confined process can start and the interpreter template is usable."""
        await self._setup()
        now = time.monotonic()
        if now - self._checked_at < 10:
            return
        await asyncio.to_thread(probe_confinement, probe_uid(self.settings))
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

    async def aclose(self) -> None:
        """Kill every sandbox and release their uids, caps and folders."""
        self._closed = True
        await self.pool.aclose()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        sandboxes = self.registry.clear()
        await asyncio.gather(
            *(self._close(s) for s in sandboxes), *self._background, return_exceptions=True
        )
        self.slots.release_all()
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        if self.host is not None:
            await self.host.egress.aclose()
            await asyncio.to_thread(shutil.rmtree, self.host.config.run_root, True)

    # ---- introspection (tests, bench) --------------------------------------------------------

    def sandbox_for(self, owner: str) -> Sandbox | None:
        return self.registry.by_owner.get(owner)

    @property
    def sandboxes(self) -> list[Sandbox]:
        return list(self.registry.by_id.values())
