"""Alembic environment: SQLite (batch mode) and PostgreSQL, sync connection handed in or async."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, text

from fragments.store.db import make_engine
from fragments.store.models import Base

config = context.config
target_metadata = Base.metadata


def _grant(connection: Connection) -> None:
    """Give the app's role (no BYPASSRLS) row access to every table the migrations made."""
    role = config.attributes.get("app_role")
    if connection.dialect.name != "postgresql" or not role:
        return
    quoted = connection.dialect.identifier_preparer.quote(role)
    connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
    connection.execute(
        text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
    )
    connection.execute(text(f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {quoted}"))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        _grant(connection)


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from fragments.config import Settings

    return Settings().resolved_migration_url


async def _run_async() -> None:
    engine = make_engine(_url())
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    _run(connection)
else:
    asyncio.run(_run_async())
