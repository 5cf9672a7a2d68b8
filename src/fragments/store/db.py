"""Engine, sessions and the unit of work.

The request's session commits on success and rolls back on error; services only flush. On
PostgreSQL the caller's identity is set per transaction (`set_config(..., true)`) so the RLS
policies see it and it never leaks to the next user of a pooled connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry


@dataclass(frozen=True)
class Identity:
    """Who the current transaction acts for (the RLS policies read it on PostgreSQL)."""

    user_id: str = ""
    team_id: str = ""
    # Asks for an operator's read access to every team's usage (PostgreSQL's policy also checks
    # that the user is an operator); set by the operator routes only.
    operator: bool = False


SYSTEM = Identity()


def _flag(on: bool) -> str:
    return "on" if on else "off"


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers work during a write; the busy timeout waits for the writer's lock.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine with the SQLite pragmas, or a pre-pinging PostgreSQL pool."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 5}, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_timeout", 5)
    connect_args = kwargs.pop("connect_args", {})
    # Fail fast when the database is unreachable: chat must not wait on it.
    connect_args.setdefault("timeout", 3)
    return create_async_engine(url, connect_args=connect_args, **kwargs)


class Database:
    """The engine and the session factory; `transaction()` is the unit of work."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **kwargs)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self, identity: Identity = SYSTEM) -> AsyncIterator[AsyncSession]:
        """One transaction: commit when the block succeeds, roll back when it raises."""
        async with self.sessions() as session, session.begin():
            if self.is_postgres:
                await session.execute(
                    text(
                        "SELECT set_config('app.user_id', :u, true), "
                        "set_config('app.team_id', :t, true), "
                        "set_config('app.operator', :o, true)"
                    ),
                    {"u": identity.user_id, "t": identity.team_id, "o": _flag(identity.operator)},
                )
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.engine.dispose()
