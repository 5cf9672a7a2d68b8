"""Command line: `fragments serve | node | db upgrade | db purge | templates build | teams ... |
operators ...`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from fragments.cli_teams import operators_app, teams_app

app = typer.Typer(
    help="Fragments: chat with a model, get a running app in a sandbox.", no_args_is_help=True
)
templates_app = typer.Typer(help="Prepare sandbox template environments.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(teams_app, name="teams")
app.add_typer(operators_app, name="operators")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the database (FRAGMENTS_DATABASE_MIGRATION_URL or FRAGMENTS_DATABASE_URL)."""
    import asyncio

    from fragments.config import Settings
    from fragments.store.migrate import upgrade

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        upgrade(
            settings.resolved_migration_url, app_role=settings.database_app_role, revision=revision
        )
    )
    typer.echo(f"database at {revision}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes (more raise streaming capacity; with "
            "FRAGMENTS_REDIS_URL they share one sandbox node)."
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[
        bool,
        typer.Option(
            help="Also log uvicorn's own access lines (as JSON; the app already logs one "
            "'http_request' line per request)."
        ),
    ] = False,
) -> None:
    """Serve the app (UI and API)."""
    from fragments.config import Settings

    # Preview URLs are built from the app's own port unless a preview domain is configured.
    os.environ.setdefault("FRAGMENTS_PORT", str(port))
    if workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _share_metrics_between_workers()
    # After the folder is chosen: prometheus-client picks its mode when first imported.
    from fragments.observability.exposition import serve_metrics_port

    serve_metrics_port(Settings())
    from fragments.jobs.node import shared_node_for_workers

    node = shared_node_for_workers(workers)
    try:
        _serve(host, port, workers, log_level, access_log)
    finally:
        if node is not None:
            node.terminate()
            node.wait(timeout=30)


def _serve(host: str, port: int, workers: int, log_level: str, access_log: bool) -> None:
    import uvicorn

    from fragments.observability.logs import stdlib_logging_config

    uvicorn.run(
        "fragments.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=stdlib_logging_config(log_level),
        access_log=access_log,
        timeout_graceful_shutdown=5,
        # The app reads X-Forwarded-For itself, from FRAGMENTS_TRUSTED_PROXIES only; uvicorn's
        # own handling would trust any local peer's header and rewrite the client address.
        proxy_headers=False,
    )


def _share_metrics_between_workers() -> None:
    """Give the workers one fresh folder for their metrics (prometheus-client's multiprocess
    mode), unless the operator set PROMETHEUS_MULTIPROC_DIR; emptied at every start, as
    prometheus-client requires."""
    import shutil
    import tempfile
    from pathlib import Path

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        path = Path(folder)
        if path.is_dir():
            for item in path.iterdir():
                if item.suffix == ".db":
                    item.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return
    path = Path(tempfile.mkdtemp(prefix="fragments-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    import atexit

    atexit.register(shutil.rmtree, path, ignore_errors=True)


@app.command()
def node(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port serving health and previews.")] = 8100,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run a sandbox node of a fleet: it takes sandbox jobs from Redis (FRAGMENTS_REDIS_URL)."""
    from fragments.config import Settings
    from fragments.jobs.node import run_node

    run_node(Settings(), host=host, port=port, log_level=log_level)


@db_app.command("purge")
def db_purge() -> None:
    """Delete conversations older than FRAGMENTS_RETENTION_DAYS (the app also does it daily)."""
    import asyncio

    from fragments.config import Settings
    from fragments.store.db import Database
    from fragments.store.retention import purge_expired

    settings = Settings()

    async def run() -> int:
        db = Database(settings.resolved_database_url)
        try:
            return await purge_expired(db, settings.retention_days)
        finally:
            await db.aclose()

    typer.echo(f"purged {asyncio.run(run())} conversations")


@templates_app.command("build")
def templates_build(
    name: Annotated[
        str | None, typer.Argument(help="Template id; all buildable when omitted.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
    fleet: Annotated[
        bool,
        typer.Option(
            help="Build on every live `fragments node` of the fleet (over FRAGMENTS_REDIS_URL) "
            "instead of this machine."
        ),
    ] = False,
) -> None:
    """Build template environments once, into the sandbox cache folder."""
    from fragments.config import Settings

    if fleet:
        from fragments.jobs.build_cli import build_on_fleet

        raise typer.Exit(build_on_fleet(Settings(), name, force=force))
    from fragments.sandbox.local.build_cli import build_templates_cli

    raise typer.Exit(build_templates_cli(Settings(), name, force=force))


if __name__ == "__main__":
    app()
