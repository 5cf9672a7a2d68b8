"""A fresh PostgreSQL database for a bench run (random name, dropped at the end), with an owner
role for migrations and an app role without BYPASSRLS, as a fleet runs in production."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

PG_HOST = "127.0.0.1"
PG_PORT = 5432
OWNER_ROLE = "fragments_bench_owner"
APP_ROLE = "fragments_bench_app"


@dataclass(frozen=True)
class BenchDatabase:
    name: str

    def url(self, role: str) -> str:
        return f"postgresql+asyncpg://{role}@{PG_HOST}:{PG_PORT}/{self.name}"

    def env(self) -> dict[str, str]:
        """The settings an API process needs to use it (already migrated: no auto-migrate race
        between processes starting together)."""
        return {
            "FRAGMENTS_DATABASE_URL": self.url(APP_ROLE),
            "FRAGMENTS_DATABASE_MIGRATION_URL": self.url(OWNER_ROLE),
            "FRAGMENTS_DATABASE_APP_ROLE": APP_ROLE,
            "FRAGMENTS_AUTO_MIGRATE": "false",
        }


async def _admin(sql: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


def _role(name: str) -> str:
    # Roles are cluster-wide: made idempotently, whoever else made them first.
    return (
        "DO $$ BEGIN "
        f"CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )


@contextlib.contextmanager
def fresh_database() -> Iterator[BenchDatabase]:
    """A migrated database of its own for one bench run."""
    from fragments.store.migrate import upgrade

    db = BenchDatabase("fragments_bench_" + secrets.token_hex(5))
    asyncio.run(
        _admin(
            [_role(OWNER_ROLE), _role(APP_ROLE), f"CREATE DATABASE {db.name} OWNER {OWNER_ROLE}"]
        )
    )
    try:
        asyncio.run(upgrade(db.url(OWNER_ROLE), app_role=APP_ROLE))
        yield db
    finally:
        asyncio.run(_admin([f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)"]))
