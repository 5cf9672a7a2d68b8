"""`fragments templates build`: builds every template's environment, Python or Node, as its
runtime's build recipe says, with a progress bar."""

from __future__ import annotations

import time
from pathlib import Path

from fragments.config import Settings
from fragments.sandbox.local.build import (
    BUILDABLE,
    Progress,
    TemplateBuildError,
    build_template,
    find_env,
    node_group,
)
from fragments.sandbox.local.node_build import (
    NODE_TEMPLATES,
    build_node_template,
    node_template_dir,
)
from fragments.sandbox.templates import TEMPLATES, Template
from fragments.sandbox.templates.runtimes import runtime_of


def _build_any(settings: Settings, template_id: str, force: bool, progress: Progress) -> Path:
    """Build a Python or a Node template (the CLI's one entry); the built folder."""
    template = TEMPLATES.get(template_id)
    if template is not None and runtime_of(template).build == "node":
        return build_node_template(
            settings,
            template_id,
            progress,
            gid=node_group(settings),
            group_writable=True,
            force=force,
        )
    return build_template(settings, template_id, force=force, progress=progress).path


def _built(settings: Settings, template: Template) -> Path | None:
    if runtime_of(template).build == "node":
        return node_template_dir(settings, template.id, gid=node_group(settings))
    env = find_env(settings, template)
    return None if env is None else env.path


def build_templates_cli(settings: Settings, name: str | None, *, force: bool = False) -> int:
    """`fragments templates build [NAME] [--force]`: build with a progress bar; exit status."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    names = [name] if name else [*BUILDABLE, *sorted(NODE_TEMPLATES)]
    status = 0
    for template_id in names:
        template = TEMPLATES.get(template_id)
        if template is None:
            console.print(
                f"[red]Unknown template '{template_id}'.[/red] Known: {', '.join(TEMPLATES)}."
            )
            status = 2
            continue
        built_at = _built(settings, template)
        if not force and built_at is not None:
            console.print(
                f"[green]{template_id}[/green] is already built at "
                f"{built_at} (use --force to rebuild)."
            )
            continue
        started = time.monotonic()
        with Progress(
            SpinnerColumn(),
            TextColumn(f"[bold]{template_id}[/bold]"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("starting", total=4)

            def on_progress(step: str, done: int, total: int) -> None:
                bar.update(task, description=step, completed=done, total=total)  # noqa: B023

            try:
                built = _build_any(settings, template_id, force, on_progress)
            except TemplateBuildError as exc:
                bar.stop()
                console.print(f"[red]Could not build {template_id}:[/red] {exc}")
                status = 1
                continue
        console.print(
            f"[green]Built {template_id}[/green] at {built} in {time.monotonic() - started:.0f} s."
        )
    return status
