"""`fragments templates build --fleet`: build template environments on every live sandbox node
of the fleet (a `build` job per node over the queue), printing each node's steps as they come,
rather than on this machine."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from fragments.config import Settings
from fragments.errors import FragmentsError
from fragments.jobs.fleet import FleetSandboxService
from fragments.sandbox.local.envs import runnable
from fragments.sandbox.templates import TEMPLATES


async def _build(settings: Settings, names: list[str], force: bool) -> int:
    fleet = FleetSandboxService.connect(settings)
    status = 0

    async def on_phase(node: str, data: dict[str, Any]) -> None:
        typer.echo(f"  {node}: {data.get('step')} ({data.get('done')}/{data.get('total')})")

    try:
        for name in names:
            typer.echo(f"{name}: building on every live node")
            for outcome in await fleet.build_template(name, force=force, on_phase=on_phase):
                node = outcome.get("node")
                if "error" in outcome:
                    typer.echo(
                        f"  {node}: could not build {name}: {outcome.get('detail')}", err=True
                    )
                    status = 1
                elif outcome.get("built"):
                    typer.echo(f"  {node}: built {name} at {outcome.get('path')}")
                else:
                    typer.echo(f"  {node}: {name} already built at {outcome.get('path')}")
    except FragmentsError as exc:
        typer.echo(f"The fleet cannot build now: {exc.detail}", err=True)
        status = 1
    finally:
        await fleet.aclose()
    return status


def build_on_fleet(settings: Settings, name: str | None, *, force: bool = False) -> int:
    """Build `name` (every template local sandboxes run when None) on every live node; the
    exit status (2: unknown template, 1: a node failed or the fleet is unreachable)."""
    if name is not None and (name not in TEMPLATES or not runnable(TEMPLATES[name])):
        known = ", ".join(t for t, v in TEMPLATES.items() if runnable(v))
        typer.echo(f"Unknown template '{name}'. Known: {known}.", err=True)
        return 2
    names = [name] if name else [t for t, v in TEMPLATES.items() if runnable(v)]
    return asyncio.run(_build(settings, names, force))
