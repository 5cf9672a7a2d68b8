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
"""

from __future__ import annotations

import asyncio
import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import structlog
from e2b import (
    AuthenticationException,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    SandboxNotRunningException,
    SandboxQuery,
    SandboxState,
    TemplateException,
    TimeoutException,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from fragments.config import Settings
from fragments.sandbox.e2b.install import WORKDIR, install_packages
from fragments.sandbox.e2b.results import CellOutput
from fragments.sandbox.e2b.sdk import Sandbox, SandboxSDK, real_sdk
from fragments.sandbox.service import (
    Phase,
    PhaseCallback,
    Program,
    SandboxUnavailable,
    prepare_program,
)
from fragments.sandbox.templates import Template, get_template
from fragments.schemas import ExecutionError, Fragment, InterpreterResult, WebResult

log = structlog.get_logger(__name__)

# Errors that another attempt cannot fix: a bad key, a template E2B does not have, bad input.
_PERMANENT = (AuthenticationException, InvalidArgumentException, TemplateException)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, _PERMANENT)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("e2b_create_retry", attempt=state.attempt_number, error=str(error)[:300])


def _gone(exc: BaseException) -> bool:
    """True when an SDK error says the sandbox itself no longer exists (killed, timed out)."""
    if isinstance(exc, NotFoundException | SandboxNotRunningException):
        return True
    return isinstance(exc, SandboxException) and "killed" in str(exc)


@dataclass(eq=False)
class E2BSandbox:
    """One live E2B sandbox as this process knows it."""

    sdk: Sandbox
    template: Template
    owner: str | None
    # Seconds E2B keeps it after its last use (raised by `extend`).
    lifetime: float
    installed: set[str] = field(default_factory=set)
    # Runs on one sandbox are serialized, as in the local backend.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def id(self) -> str:
        return self.sdk.sandbox_id


class E2BSandboxService:
    """SandboxService over E2B's cloud sandboxes (see the module docstring)."""

    def __init__(self, settings: Settings, sdk: SandboxSDK | None = None) -> None:
        self.settings = settings
        self._sdk = sdk
        self._by_id: dict[str, E2BSandbox] = {}
        self._by_owner: dict[str, E2BSandbox] = {}
        # One acquisition at a time per owner, so two requests never make two sandboxes.
        self._owner_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._closed = False

    # ---- plumbing ----------------------------------------------------------------------------

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

    def _timeout(self, seconds: float) -> int:
        return max(1, math.ceil(seconds))

    def _register(self, sandbox: E2BSandbox) -> None:
        self._by_id[sandbox.id] = sandbox
        if sandbox.owner is not None:
            self._by_owner[sandbox.owner] = sandbox

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

    # ---- acquiring a sandbox -----------------------------------------------------------------

    async def _create(
        self, owner: str | None, template: Template, key: str, phase: PhaseCallback
    ) -> E2BSandbox:
        """A new sandbox, retried with backoff; the last error when every attempt failed."""
        await phase("starting")
        s = self.settings
        backoff = s.sandbox_retry_backoff_seconds
        metadata: dict[str, str] = {"template": template.id}
        if owner is not None:
            metadata["owner"] = owner
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(s.sandbox_start_retries + 1),
            wait=wait_exponential(multiplier=backoff, min=backoff, max=4 * backoff),
            retry=retry_if_exception(_retryable),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                created = await self.sdk.create(
                    template=template.id,
                    timeout=self._timeout(s.sandbox_lifetime_seconds),
                    metadata=metadata,
                    api_key=key,
                    domain=s.e2b_domain,
                )
        sandbox = E2BSandbox(created, template, owner, s.sandbox_lifetime_seconds)
        log.info("e2b_sandbox_created", sandbox_id=sandbox.id, template=template.id)
        self._register(sandbox)
        return sandbox

    async def _refresh(self, sandbox: E2BSandbox) -> bool:
        """Restart the sandbox's timeout; False (and forgotten) when E2B has killed it."""
        try:
            await sandbox.sdk.set_timeout(self._timeout(sandbox.lifetime))
        except Exception as exc:
            if not _gone(exc):
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
            template_id = info.metadata.get("template", "")
            try:
                template = get_template(template_id)
                connected = await self.sdk.connect(
                    info.sandbox_id,
                    timeout=self._timeout(s.sandbox_lifetime_seconds),
                    api_key=key,
                    domain=s.e2b_domain,
                )
            except Exception as exc:
                log.info("e2b_reconnect_failed", sandbox_id=info.sandbox_id, error=str(exc)[:200])
                continue
            sandbox = E2BSandbox(connected, template, owner, s.sandbox_lifetime_seconds)
            self._register(sandbox)
            return sandbox
        return None

    async def _acquire(
        self, owner: str | None, template: Template, restart: bool, key: str, phase: PhaseCallback
    ) -> E2BSandbox:
        if self._closed:
            raise SandboxUnavailable("The sandbox service is shutting down.")
        if owner is None:
            return await self._create(None, template, key, phase)
        async with self._owner_lock(owner):
            current = self._by_owner.get(owner)
            if current is None:
                current = await self._reconnect(owner, key)
            if current is not None and (restart or current.template.id != template.id):
                await self._kill(current)
                current = None
            if current is not None and await self._refresh(current):
                return current
            return await self._create(owner, template, key, phase)

    # ---- the protocol ------------------------------------------------------------------------

    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
    ) -> InterpreterResult | WebResult:
        """Run a fragment in the owner's E2B sandbox (see the module docstring)."""
        program = prepare_program(fragment)
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
            log.error("e2b_create_failed", template=template.id, error=str(exc)[:300])
            reason = f"The E2B sandbox could not be created: {exc}"
            if template.runtime == "web":
                return WebResult(
                    sandbox_id=None,
                    template=template.id,
                    url=None,
                    error=ExecutionError(name="SandboxStartError", value=reason),
                )
            raise SandboxUnavailable(reason, headers={"Retry-After": "5"}) from exc
        try:
            async with sandbox.lock:
                if template.runtime == "web":
                    return await self._serve(sandbox, program, phase)
                return await self._run(sandbox, program, phase)
        finally:
            if owner is None:
                await self._kill(sandbox)

    async def _install(
        self, sandbox: E2BSandbox, program: Program, phase: PhaseCallback
    ) -> ExecutionError | None:
        """Install the program's packages this sandbox lacks; the installer's error, if any."""
        missing = [d for d in program.dependencies if d not in sandbox.installed]
        if not missing:
            return None
        await phase("installing")
        error = await install_packages(
            sandbox.sdk,
            missing,
            program.template.language,
            self.settings.sandbox_install_timeout_seconds,
        )
        if error is None:
            sandbox.installed.update(missing)
        return error

    async def _write(self, sandbox: E2BSandbox, files: list[tuple[str, str]]) -> None:
        for path, content in files:
            # Paths were checked by prepare_program: relative, inside the workspace.
            await sandbox.sdk.files.write(str(PurePosixPath(WORKDIR, path)), content)

    def _lost(self, sandbox: E2BSandbox, exc: Exception) -> ExecutionError:
        """The error for a run whose sandbox failed under it (forgotten when it is gone)."""
        if _gone(exc):
            self._forget(sandbox)
            return ExecutionError(
                name="SandboxError",
                value=(
                    "The E2B sandbox stopped during the run (it was killed or reached its "
                    "timeout); run again for a new one, variables from earlier runs are gone."
                ),
            )
        if isinstance(exc, TimeoutException):
            return ExecutionError(
                name="TimeoutError",
                value=(
                    f"Execution stopped after {self.settings.sandbox_run_timeout_seconds:g} s, "
                    "the time limit for one run."
                ),
            )
        return ExecutionError(name="SandboxError", value=f"The E2B sandbox failed: {exc}")

    async def _run(
        self, sandbox: E2BSandbox, program: Program, phase: PhaseCallback
    ) -> InterpreterResult:
        template_id = program.template.id
        output = CellOutput(self.settings.sandbox_output_cap_bytes)
        try:
            error = await self._install(sandbox, program, phase)
            if error is not None:
                return InterpreterResult(sandbox_id=sandbox.id, template=template_id, error=error)
            await phase("running")
            if program.files:
                await self._write(sandbox, list(program.files))
            execution = await sandbox.sdk.run_code(
                program.code,
                on_stdout=output.on_stdout,
                on_stderr=output.on_stderr,
                timeout=self.settings.sandbox_run_timeout_seconds,
            )
        except SandboxException as exc:
            # Whatever the cell printed before it failed comes back with the error.
            output.fail(self._lost(sandbox, exc))
            return output.result(sandbox.id, template_id)
        output.add_execution(execution, streamed=True)
        return output.result(sandbox.id, template_id)

    async def _serve(
        self, sandbox: E2BSandbox, program: Program, phase: PhaseCallback
    ) -> WebResult:
        """Install, then write the app: E2B's template runs the dev server, which reloads."""
        template = program.template
        try:
            error = await self._install(sandbox, program, phase)
            if error is None:
                await phase("running")
                await self._write(sandbox, list(program.files) or [(program.entry, program.code)])
        except SandboxException as exc:
            error = self._lost(sandbox, exc)
        if error is not None:
            return WebResult(sandbox_id=sandbox.id, template=template.id, url=None, error=error)
        # Every web template has a port (the registry says so); 80 is E2B's default.
        host = sandbox.sdk.get_host(template.port or 80)
        return WebResult(sandbox_id=sandbox.id, template=template.id, url=f"https://{host}")

    async def extend(self, sandbox_id: str, seconds: float) -> float | None:
        """Keep a sandbox `seconds` more (up to sandbox_max_lifetime_seconds) by setting its E2B
        timeout; None when it is not live. A sandbox from before a restart is reconnected."""
        granted = max(1.0, min(seconds, self.settings.sandbox_max_lifetime_seconds))
        sandbox = self._by_id.get(sandbox_id)
        try:
            if sandbox is None:
                key = self._api_key()
                connected = await self.sdk.connect(
                    sandbox_id,
                    timeout=self._timeout(granted),
                    api_key=key,
                    domain=self.settings.e2b_domain,
                )
                await connected.set_timeout(self._timeout(granted))
                return granted
            await sandbox.sdk.set_timeout(self._timeout(granted))
        except SandboxException as exc:
            if not _gone(exc):
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
        except SandboxException as exc:
            if not _gone(exc):
                raise
            return False
        return await connected.kill()

    def preview_socket(self, sandbox_id: str, port: int) -> Path | None:
        """None: E2B serves previews on its own hosts; the app's proxy never relays them."""
        return None

    def preview_expired(self, sandbox_id: str) -> bool:
        """False: preview hosts are E2B's, so the app's proxy never asks about them."""
        return False

    async def check(self) -> None:
        """Raise when no E2B key is configured (E2B itself is not called on every check)."""
        self._api_key()

    async def aclose(self) -> None:
        """Kill every sandbox this process made or reconnected."""
        self._closed = True
        sandboxes = list(self._by_id.values())
        await asyncio.gather(*(self._kill(s) for s in sandboxes), return_exceptions=True)

    # ---- introspection (tests) ---------------------------------------------------------------

    def sandbox_for(self, owner: str) -> E2BSandbox | None:
        return self._by_owner.get(owner)

    @property
    def sandboxes(self) -> list[E2BSandbox]:
        return list(self._by_id.values())
