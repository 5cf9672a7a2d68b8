"""Migrations run on SQLite and PostgreSQL, agree with the models, and SQLite runs in WAL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from fragments.config import Settings
from fragments.store.db import Database
from fragments.store.migrate import alembic_config, check, upgrade

pytestmark = pytest.mark.anyio


async def test_models_and_migrations_agree(db_settings: Settings) -> None:
    # `alembic check`: autogenerate finds nothing to add, drop or alter.
    await check(db_settings.resolved_migration_url)


async def test_upgrade_is_idempotent(db_settings: Settings) -> None:
    await upgrade(db_settings.resolved_migration_url, app_role=db_settings.database_app_role)
    db = Database(db_settings.resolved_database_url)
    try:
        async with db.transaction() as session:
            version = await session.execute(text("SELECT version_num FROM alembic_version"))
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            assert version.scalar_one() == head
    finally:
        await db.aclose()


async def test_fresh_sqlite_migrates_from_nothing(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    await upgrade(url)
    await check(url)
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
            fks = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
        assert (mode, timeout, fks) == ("wal", 5000, 1)
    finally:
        await db.aclose()


def test_the_cli_migrates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fragments.cli import app

    monkeypatch.setenv("FRAGMENTS_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.delenv("FRAGMENTS_DATABASE_URL", raising=False)
    monkeypatch.delenv("FRAGMENTS_DATABASE_MIGRATION_URL", raising=False)
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "database at head" in result.output
    assert (tmp_path / "cli-data" / "fragments.db").is_file()
    purged = CliRunner().invoke(app, ["db", "purge"])
    assert purged.exit_code == 0, purged.output
    assert "purged 0 conversations" in purged.output


async def test_concurrent_start_ups_migrate_one_at_a_time(
    db_settings: Settings, tmp_path: Path
) -> None:
    import asyncio

    # A fresh SQLite file (the PostgreSQL database of the run is already at head: the advisory
    # lock is exercised there by the concurrent no-op upgrades).
    urls = [f"sqlite+aiosqlite:///{tmp_path / 'race.db'}", db_settings.resolved_migration_url]
    for url in urls:
        await asyncio.gather(
            *(upgrade(url, app_role=db_settings.database_app_role) for _ in range(3))
        )
        await check(url)
