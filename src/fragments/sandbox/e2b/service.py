"""The E2B sandbox backend: fragments run in E2B's cloud sandboxes through the official
`e2b-code-interpreter` SDK, behind the same SandboxService protocol as the local backend.

A sandbox is created from the E2B template named like ours (`code-interpreter-v1`,
`nextjs-developer`, ... as the original Fragments app did), tagged with metadata {template,
owner}, and lives `sandbox_lifetime_seconds` after its last use: every run sets E2B's timeout
again, `extend` raises it up to `sandbox_max_lifetime_seconds`, and E2B kills it when it
runs out. A conversation (owner) keeps its sandbox: this process remembers it, and after a
restart finds it again by its metadata and reconnects; one E2B has killed is replaced by a new
one. A request without an owner gets a sandbox that is killed after its run. Creation is retried
with backoff (1, 2, 4 s); when it still fails, a web template answers "no live preview" and the
interpreter a 503, as with the local backend. Previews are served by E2B itself
(`https://<port>-<sandbox id>.<E2B domain>`), never through the app's proxy.

In a fleet (FRAGMENTS_REDIS_URL set) the instances share, through Redis (e2b/fleet.py), a lock
per owner (two processes never create two sandboxes for one conversation), the owner's current
sandbox, and who created and who uses each one: a graceful shutdown kills only the sandboxes
this instance created and no other live instance uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import structlog
from e2b import SandboxQuery, SandboxState

from fragments.config import Settings
from fragments.redis_client import SharedRedis
from fragments.resilience import BreakerConfig, BreakerOpen, CircuitBreaker
from fragments.sandbox.e2b.fleet import KEY_PREFIX, FleetRecords
from fragments.sandbox.e2b.runs import run_cell, serve_app
from fragments.sandbox.e2b.sandboxes import (
    E2BSandbox,
    create_sandbox,
    is_gone,
    timeout_seconds,
)
from fragments.sandbox.e2b.sdk import SandboxSDK, real_sdk
from fragments.sandbox.service import (
    DataFile,
    Phase,
    PhaseCallback,
    PreparedSandbox,
    SandboxUnavailable,
    prepare_program,
)
from fragments.sandbox.templates import Template, get_template
from fragments.schemas import ExecutionError, Fragment, InterpreterResult, WebResult

log = structlog.get_logger(__name__)

# How long a readiness verdict of E2B is kept, and how long asking may take.
CHECK_SECONDS = 10.0
CHECK_TIMEOUT_SECONDS = 10.0


class E2BSandboxService:
    """SandboxService over E2B's cloud sandboxes (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        sdk: SandboxSDK | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        redis: SharedRedis | None = None,
        fleet_prefix: str = KEY_PREFIX,
    ) -> None:
        self.settings = settings
        self._sdk = sdk
        # Creation fails fast while this is open (see LocalSandboxService.breaker).
        self.breaker = breaker or CircuitBreaker(
            "sandbox:e2b", BreakerConfig.from_settings(settings)
        )
        # The records shared with the fleet's other instances; None: this process is alone.
        self.fleet = FleetRecords(redis, prefix=fleet_prefix) if redis is not None else None
        self._by_id: dict[str, E2BSandbox] = {}
        self._by_owner: dict[str, E2BSandbox] = {}
        # One acquisition at a time per owner, so two requests never make two sandboxes.
        self._owner_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._closed = False
        # (when, error or None) of the last readiness check.
        self._checked: tuple[float, str | None] | None = None

    @property
    def sdk(self) -> SandboxSDK:
        if self._sdk is None:
            self._sdk = real_sdk()
        return self._sdk

    def _api_key(self) -> str:
        key = self.settings.e2b_api_key
        if key is None or not key.get_secret_value():
            raise SandboxUnavailable(
                "The E2B sandbox backend needs E2B_API_KEY (FRAGMENTS_SANDBOX_BACKEND=e2b)."
            )
        return key.get_secret_value()

    def _owner_lock(self, owner: str) -> asyncio.Lock:
        lock = self._owner_locks.get(owner)
        if lock is None:
            lock = asyncio.Lock()
            self._owner_locks[owner] = lock
        return lock

    def _register(self, sandbox: E2BSandbox) -> E2BSandbox:
        self._by_id[sandbox.id] = sandbox
        if sandbox.owner is not None:
            self._by_owner[sandbox.owner] = sandbox
        return sandbox

    def _forget(self, sandbox: E2BSandbox) -> None:
        self._by_id.pop(sandbox.id, None)
        if sandbox.owner is not None and self._by_owner.get(sandbox.owner) is sandbox:
            del self._by_owner[sandbox.owner]

    async def _kill(self, sandbox: E2BSandbox) -> bool:
        self._forget(sandbox)
        try:
            return await sandbox.sdk.kill()
        except Exception as exc:  # a sandbox that cannot be killed now expires on its own
            log.warning("e2b_kill_failed", sandbox_id=sandbox.id, error=str(exc)[:300])
            return False
        finally:
            if self.fleet is not None:
                await self.fleet.forget(sandbox.id, sandbox.owner)

    async def _record(self, sandbox: E2BSandbox, *, created: bool) -> E2BSandbox:
        if self.fleet is not None:
            await self.fleet.record(sandbox.id, sandbox.template.id, sandbox.owner, created=created)
        return sandbox

    @contextlib.asynccontextmanager
    async def _fleet_lock(self, owner: str) -> AsyncIterator[None]:
        if self.fleet is None:
            yield
            return
        async with self.fleet.owner_lock(owner):
            yield

    # ---- acquiring a sandbox -----------------------------------------------------------------

    async def _refresh(self, sandbox: E2BSandbox) -> bool:
        """Start the sandbox's lifetime again; False (and forgotten) when E2B has killed it."""
        try:
            await sandbox.sdk.set_timeout(timeout_seconds(sandbox.lifetime))
        except Exception as exc:
            if not is_gone(exc):
                raise
            log.info("e2b_sandbox_gone", sandbox_id=sandbox.id)
            self._forget(sandbox)
            return False
        return True

    async def _reconnect(self, owner: str, key: str) -> E2BSandbox | None:
        """The owner's running sandbox from before this process started, if E2B still has it."""
        s = self.settings
        query = SandboxQuery(metadata={"owner": owner}, state=[SandboxState.RUNNING])
        try:
            page = self.sdk.list(query=query, limit=1, api_key=key, domain=s.e2b_domain)
            found = await page.next_items() if page.has_next else []
        except Exception as exc:  # listing is an optimisation: a new sandbox does as well
            log.warning("e2b_list_failed", error=str(exc)[:300])
            return None
        for info in found:
            try:
                template = get_template(info.metadata.get("template", ""))
                connected = await self.sdk.connect(
                    info.sandbox_id,
                    timeout=timeout_seconds(s.sandbox_lifetime_seconds),
                    api_key=key,
                    domain=s.e2b_domain,
                )
            except Exception as exc:
                log.info("e2b_reconnect_failed", sandbox_id=info.sandbox_id, error=str(exc)[:200])
                continue
            # A lifetime raised by `extend` before the restart (a published app) is kept.
            left = (info.end_at - datetime.now(UTC)).total_seconds()
            lifetime = min(max(s.sandbox_lifetime_seconds, left), s.sandbox_max_lifetime_seconds)
            return self._register(E2BSandbox(connected, template, owner, lifetime))
        return None

    async def _connect_recorded(
        self, owner: str, sandbox_id: str, template_id: str, key: str
    ) -> E2BSandbox | None:
        """The owner's sandbox another instance recorded, connected; None when it is gone."""
        s = self.settings
        try:
            template = get_template(template_id)
            connected = await self.sdk.connect(
                sandbox_id,
                timeout=timeout_seconds(s.sandbox_lifetime_seconds),
                api_key=key,
                domain=s.e2b_domain,
            )
        except Exception as exc:
            log.info("e2b_recorded_sandbox_gone", sandbox_id=sandbox_id, error=str(exc)[:200])
            if self.fleet is not None:
                await self.fleet.forget(sandbox_id, owner)
            return None
        return self._register(E2BSandbox(connected, template, owner, s.sandbox_lifetime_seconds))

    async def _current(self, owner: str, key: str) -> E2BSandbox | None:
        """The owner's sandbox: the fleet's record wins over this process's memory (another
        instance may have replaced it), then E2B's own list (a restart without Redis)."""
        local = self._by_owner.get(owner)
        recorded = await self.fleet.sandbox_of(owner) if self.fleet is not None else None
        if recorded is not None:
            sandbox_id, template_id = recorded
            if local is not None and local.id == sandbox_id:
                return local
            if local is not None:
                self._forget(local)  # replaced elsewhere: not ours to kill
            return await self._connect_recorded(owner, sandbox_id, template_id, key)
        return local or await self._reconnect(owner, key)

    async def _acquire(
        self, owner: str | None, template: Template, restart: bool, key: str, phase: PhaseCallback
    ) -> E2BSandbox:
        if self._closed:
            raise SandboxUnavailable("The sandbox service is shutting down.")
        if owner is not None:
            # This process's lock first: its other requests wait here, not polling Redis.
            async with self._owner_lock(owner), self._fleet_lock(owner):
                current = await self._current(owner, key)
                if current is not None and (restart or current.template.id != template.id):
                    await self._kill(current)
                    current = None
                if current is not None and await self._refresh(current):
                    return await self._record(current, created=False)
                await phase("starting")
                created = await self._create(template, owner, key)
                return await self._record(self._register(created), created=True)
        await phase("starting")
        return self._register(await self._create(template, None, key))

    async def _create(self, template: Template, owner: str | None, key: str) -> E2BSandbox:
        """A new E2B sandbox under the creation breaker (a creation that failed after its
        retries counts; while open, `BreakerOpen` at once)."""
        async with self.breaker.guard():
            return await create_sandbox(self.sdk, self.settings, template, owner, key)

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
        """Run a fragment in the owner's E2B sandbox (see the module docstring)."""
        program = prepare_program(fragment, data_files)
        template = program.template

        async def phase(name: Phase) -> None:
            if on_phase is not None:
                await on_phase(name)

        key = self._api_key()
        await phase("acquiring")
        try:
            sandbox = await self._acquire(owner, template, restart, key, phase)
        except SandboxUnavailable:
            raise
        except Exception as exc:
            retry_after = 5
            if isinstance(exc, BreakerOpen):
                retry_after = max(1, round(exc.retry_after))
                reason = (
                    "E2B sandboxes cannot be created right now (recent creations failed); "
                    f"tried again in about {retry_after} s."
                )
            else:
                log.error("e2b_create_failed", template=template.id, error=str(exc)[:300])
                reason = f"The E2B sandbox could not be created: {exc}"
            if template.runtime == "web":
                return WebResult(
                    sandbox_id=None,
                    template=template.id,
                    url=None,
                    error=ExecutionError(name="SandboxStartError", value=reason),
                )
            raise SandboxUnavailable(reason, headers={"Retry-After": str(retry_after)}) from exc
        try:
            async with sandbox.lock:
                if template.runtime == "web":
                    return await serve_app(sandbox, program, self.settings, phase)
                return await run_cell(sandbox, program, self.settings, phase)
        finally:
            if owner is None:
                await self._kill(sandbox)

    async def prepare(self, template: Template, owner: str) -> PreparedSandbox | None:
        """Create (or reconnect to, or keep) the owner's E2B sandbox for `template` without
        writing any code: creation is most of a first run's wait. E2B's template starts the
        dev server itself, so a web sandbox's URL serves its placeholder page already."""
        key = self._api_key()

        async def quiet(_: Phase) -> None:
            return None

        try:
            sandbox = await self._acquire(owner, template, False, key, quiet)
        except SandboxUnavailable:
            raise
        except Exception as exc:
            log.error("e2b_prepare_failed", template=template.id, error=str(exc)[:300])
            raise SandboxUnavailable(
                f"The E2B sandbox could not be created: {exc}", headers={"Retry-After": "5"}
            ) from exc
        url = None
        if template.runtime == "web":
            url = f"https://{sandbox.sdk.get_host(template.port or 80)}"
        return PreparedSandbox(sandbox.id, template.id, url)

    async def extend(self, sandbox_id: str, seconds: float) -> float | None:
        """Keep a sandbox `seconds` more (up to sandbox_max_lifetime_seconds) by setting its E2B
        timeout; None when it is not live. A sandbox from before a restart is reconnected."""
        granted = max(1.0, min(seconds, self.settings.sandbox_max_lifetime_seconds))
        timeout = timeout_seconds(granted)
        sandbox = self._by_id.get(sandbox_id)
        try:
            if sandbox is None:
                connected = await self.sdk.connect(
                    sandbox_id,
                    timeout=timeout,
                    api_key=self._api_key(),
                    domain=self.settings.e2b_domain,
                )
                # Connecting only ever lengthens a timeout; this sets it either way.
                await connected.set_timeout(timeout)
                return granted
            await sandbox.sdk.set_timeout(timeout)
        except Exception as exc:
            if not is_gone(exc):
                raise
            if sandbox is not None:
                self._forget(sandbox)
            return None
        sandbox.lifetime = granted
        return granted

    async def kill(self, sandbox_id: str) -> bool:
        """Kill a sandbox now; False if it was not live."""
        sandbox = self._by_id.get(sandbox_id)
        if sandbox is not None:
            return await self._kill(sandbox)
        try:
            connected = await self.sdk.connect(
                sandbox_id, api_key=self._api_key(), domain=self.settings.e2b_domain
            )
        except Exception as exc:
            if not is_gone(exc):
                raise
            return False
        killed = await connected.kill()
        if self.fleet is not None:
            await self.fleet.forget(sandbox_id, None)
        return killed

    def preview_socket(self, sandbox_id: str, port: int) -> Path | None:
        """None: E2B serves previews on its own hosts; the app's proxy never relays them."""
        return None

    def preview_expired(self, sandbox_id: str) -> bool:
        """False: preview hosts are E2B's, so the app's proxy never asks about them."""
        return False

    async def check(self) -> None:
        """Raise unless E2B answers an authenticated request (a list of at most one running
        sandbox: no sandbox is made). The verdict is kept `CHECK_SECONDS`, so readiness probes
        and `GET /api/status` do not call E2B on every request."""
        key = self._api_key()
        now = time.monotonic()
        if self._checked is None or now - self._checked[0] >= CHECK_SECONDS:
            error = None
            try:
                query = SandboxQuery(state=[SandboxState.RUNNING])
                page = self.sdk.list(
                    query=query, limit=1, api_key=key, domain=self.settings.e2b_domain
                )
                await asyncio.wait_for(page.next_items(), CHECK_TIMEOUT_SECONDS)
            except Exception as exc:  # any failure is the verdict, reported below
                error = f"E2B does not answer: {type(exc).__name__}: {str(exc)[:200]}"
            self._checked = (now, error)
        if self._checked[1] is not None:
            raise SandboxUnavailable(self._checked[1], headers={"Retry-After": "5"})

    async def aclose(self) -> None:
        """Kill the sandboxes this process is done with: alone, every one it made or
        reconnected; in a fleet, only those it made that no other live instance uses."""
        self._closed = True
        sandboxes = list(self._by_id.values())
        if self.fleet is not None:
            doomed = [s for s in sandboxes if await self.fleet.release(s.id)]
            for sandbox in sandboxes:
                if sandbox not in doomed:
                    self._forget(sandbox)
            sandboxes = doomed
        await asyncio.gather(*(self._kill(s) for s in sandboxes), return_exceptions=True)
        if self.fleet is not None:
            await self.fleet.aclose()

    # ---- introspection (tests) ---------------------------------------------------------------

    def sandbox_for(self, owner: str) -> E2BSandbox | None:
        return self._by_owner.get(owner)

    @property
    def sandboxes(self) -> list[E2BSandbox]:
        return list(self._by_id.values())
