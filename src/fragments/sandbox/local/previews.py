"""Live previews from local web sandboxes: writing an app into its sandbox and (re)starting or
reloading its dev server, the placeholder page a warm or prepared sandbox serves, and the
preview URL the app's proxy answers on."""

from __future__ import annotations

import asyncio
import time

import structlog

from fragments.config import Settings
from fragments.sandbox.local.runs import SandboxHooks, check_open
from fragments.sandbox.local.sandbox_base import SandboxStartError
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.service import PhaseCallback, Program, unwritten_data
from fragments.sandbox.templates import Template
from fragments.sandbox.templates.runtimes import runtime_of
from fragments.schemas import ExecutionError, WebResult

log = structlog.get_logger(__name__)


def preview_url(settings: Settings, sandbox: WebSandbox) -> str:
    """`<scheme>://<port>-<sandbox id>.<preview domain>/` (the E2B pattern)."""
    domain = settings.resolved_preview_domain
    return f"{settings.preview_scheme}://{sandbox.port}-{sandbox.id}.{domain}/"


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


async def serve_placeholder(sandbox: WebSandbox) -> None:
    """Start a web sandbox on its template's placeholder page (warm slots, `prepare`)."""
    strategy = runtime_of(sandbox.env.template)
    if strategy.placeholder is not None:
        await sandbox.write_files([(sandbox.entry, strategy.placeholder)])
    # A Node slot serves the scaffold's page, compiled by `start` (its first GET).
    await sandbox.start()
    if strategy.renders_placeholder:
        await sandbox.warm_streamlit()


async def serve_app(
    sandbox: WebSandbox,
    program: Program,
    phase: PhaseCallback,
    hooks: SandboxHooks,
    settings: Settings,
) -> WebResult:
    """Write the app into a web sandbox and (re)start its server; the sandbox lives on."""
    template = program.template
    async with sandbox.lock:
        check_open(sandbox, "the run waited")
        files: list[tuple[str, str | bytes]] = [
            *(program.files or [(program.entry, program.code)]),
            *unwritten_data(program, sandbox.data_digests),
        ]
        if sandbox.alive and sandbox.entry != program.entry:
            await sandbox.stop()  # the server runs another file
        sandbox.entry = program.entry
        # Gradio in reload mode says when it has swapped the new code in: counted from here.
        reloads = (sandbox.reloads, sandbox.reload_failures)
        if sandbox.node:
            # npm installs into the project overlay, which writing the files mounts.
            error = await sandbox.write_files(files)
            if error is None:
                error = await hooks.install_extras(sandbox, program, phase)
        else:
            # Packages first: a Python dev server reruns the new file as soon as it lands.
            await asyncio.to_thread(sandbox.prepare)
            error = await hooks.install_extras(sandbox, program, phase)
            if error is None:
                error = await sandbox.write_files(files)
        if error is not None:
            sandbox.data_digests.clear()  # written or not: written again next run
            return WebResult(sandbox_id=sandbox.id, template=template.id, url=None, error=error)
        # Every dev server reloads a rewritten file by itself; some reloads are waited for, so
        # that the URL answered serves the new code (or its error).
        waits = runtime_of(template).waits_for_reload
        if sandbox.alive and sandbox.serving and waits:
            error = await sandbox.wait_reload(*reloads)
            if error is not None:
                return WebResult(sandbox_id=sandbox.id, template=template.id, url=None, error=error)
        if not sandbox.alive or not sandbox.serving:
            await phase("starting")
            try:
                if sandbox.alive:
                    await sandbox.wait_ready()
                else:
                    await hooks.start_sandbox(sandbox)
            except SandboxStartError as exc:
                log.warning("sandbox_web_start_failed", sandbox_id=sandbox.id)
                await hooks.discard(sandbox)
                return WebResult(
                    sandbox_id=None,
                    template=template.id,
                    url=None,
                    error=ExecutionError(name="SandboxStartError", value=str(exc)),
                )
        await phase("running")
        sandbox.last_used = time.monotonic()
        return WebResult(
            sandbox_id=sandbox.id, template=template.id, url=preview_url(settings, sandbox)
        )
