"""Run the Alembic migrations from code: the app at start-up, `fragments db upgrade`, tests."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

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


async def upgrade(url: str, *, app_role: str | None = None, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` (idempotent)."""
    cfg = alembic_config(url, app_role)
    engine = make_engine(url)

    def run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    try:
        async with engine.connect() as conn:
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
