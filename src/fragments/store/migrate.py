"""Run the Alembic migrations from code: the app at start-up, `fragments db upgrade`, tests."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, make_url, text

from fragments.store.db import make_engine


def migrations_dir() -> Path:
    """`migrations/` beside `src/` in a checkout; inside the package in a wheel."""
    packaged = Path(str(resources.files("fragments"))) / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "migrations"


def alembic_config(url: str | None = None, app_role: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if app_role:
        cfg.attributes["app_role"] = app_role
    return cfg


# Any constant: app processes starting together (uvicorn --workers N) migrate one at a time.
_PG_LOCK = 7_240_917_311


@contextlib.asynccontextmanager
async def _file_lock(url: str) -> AsyncIterator[None]:
    """SQLite: an exclusive lock on a file beside the database while migrating (waited for in
    a thread, so the event loop keeps running)."""
    path = make_url(url).database
    if not path or path == ":memory:":
        yield
        return
    fd = await asyncio.to_thread(os.open, f"{path}.migrate.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def upgrade(url: str, *, app_role: str | None = None, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` (idempotent; concurrent callers take turns)."""
    cfg = alembic_config(url, app_role)
    engine = make_engine(url)
    postgres = engine.dialect.name == "postgresql"

    def run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        if postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        command.upgrade(cfg, revision)

    try:
        async with (
            contextlib.nullcontext() if postgres else _file_lock(url),
            engine.connect() as conn,
        ):
            await conn.run_sync(run)
            await conn.commit()
    finally:
        await engine.dispose()


async def check(url: str) -> None:
    """Raise when the models and the migrations disagree (`alembic check`)."""
    cfg = alembic_config(url)
    engine = make_engine(url)

    def run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.check(cfg)

    try:
        async with engine.connect() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()
