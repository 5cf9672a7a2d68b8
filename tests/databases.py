"""Test databases: a migrated SQLite file copied per test, and one fresh PostgreSQL database per
run (random name, dropped at the end) with an owner role for migrations and an app role without
BYPASSRLS, as in production."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

PG_HOST = "127.0.0.1"
PG_PORT = 5432
OWNER_ROLE = "fragments_test_owner"
APP_ROLE = "fragments_test_app"


@dataclass(frozen=True)
class PgDatabase:
    name: str
    port: int = PG_PORT

    def url(self, role: str, *, port: int | None = None) -> str:
        return f"postgresql+asyncpg://{role}@{PG_HOST}:{port or self.port}/{self.name}"

    @property
    def app_url(self) -> str:
        return self.url(APP_ROLE)

    @property
    def owner_url(self) -> str:
        return self.url(OWNER_ROLE)


async def _admin(sql: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


def _role(name: str) -> str:
    # Roles are cluster-wide and shared by concurrent runs: create them idempotently.
    return (
        "DO $$ BEGIN "
        f"CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )


def create_pg_database() -> PgDatabase:
    """Raises OSError (or asyncpg's errors) when PostgreSQL is unreachable."""
    name = "fragments_test_" + secrets.token_hex(6)
    asyncio.run(
        _admin(
            [
                _role(OWNER_ROLE),
                _role(APP_ROLE),
                f"CREATE DATABASE {name} OWNER {OWNER_ROLE}",
            ]
        )
    )
    db = PgDatabase(name)
    from fragments.store.migrate import upgrade

    asyncio.run(upgrade(db.owner_url, app_role=APP_ROLE))
    return db


def drop_pg_database(db: PgDatabase) -> None:
    asyncio.run(_admin([f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)"]))


def migrated_sqlite(folder: Path) -> Path:
    """A SQLite database at head, made once per run and copied into each test's data folder."""
    path = folder / "template.db"
    from fragments.store.migrate import upgrade

    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    # A copy must not depend on the WAL file: fold it into the main file first.
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    return path


def copy_sqlite(template: Path, data_dir: Path) -> Path:
    target = data_dir / "fragments.db"
    shutil.copyfile(template, target)
    return target
