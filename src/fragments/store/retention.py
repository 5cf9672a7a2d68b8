"""Retention: conversations not updated for `retention_days` are deleted (their messages,
fragments and results go with them), by a job the app runs daily and `fragments db purge`.
In a fleet the daily job runs on one instance a day: every instance checks hourly, through a
guard (fragments.once) that lets the first one run and the others skip."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import delete, select

from fragments.store.db import Database, Identity, aware
from fragments.store.models import Conversation, Membership, Team, User

log = structlog.get_logger(__name__)

DAY = 24 * 3600.0
HOUR = 3600.0


class Guard(Protocol):
    """What the purge needs of fragments.once's guards (kept here: storage sits below them)."""

    async def run(self, name: str, period: float, job: Callable[[], Awaitable[object]]) -> str: ...


async def purge_expired(db: Database, retention_days: int, *, now: datetime | None = None) -> int:
    """Delete expired conversations; returns how many. Each user's rows are deleted acting as
    that user, so on PostgreSQL the job needs no way around row-level security."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    async with db.transaction() as session:
        users = (await session.execute(select(User.id, User.is_guest, User.created_at))).all()
    total = 0
    for user_id, is_guest, created_at in users:
        async with db.transaction(Identity(user_id, "")) as session:
            result = await session.execute(
                delete(Conversation).where(
                    Conversation.user_id == user_id, Conversation.updated_at < cutoff
                )
            )
            total += int(getattr(result, "rowcount", 0) or 0)
            if is_guest and aware(created_at) < cutoff:
                # An old guest with nothing left goes too (every visit without a token makes one).
                left = await session.execute(
                    select(Conversation.id).where(Conversation.user_id == user_id).limit(1)
                )
                if left.first() is None:
                    teams = select(Membership.team_id).where(Membership.user_id == user_id)
                    personal = list(
                        (
                            await session.execute(
                                select(Team.id).where(Team.id.in_(teams), Team.personal.is_(True))
                            )
                        ).scalars()
                    )
                    await session.execute(delete(User).where(User.id == user_id))
                    if personal:
                        await session.execute(delete(Team).where(Team.id.in_(personal)))
    return total


async def retention_loop(
    db: Database,
    retention_days: int,
    *,
    every: float = DAY,
    first_delay: float = 300.0,
    guard: Guard | None = None,
) -> None:
    """Run the purge after `first_delay` (start-up stays quick), then every `every` seconds
    until cancelled; failures are logged, never raised. With a guard, the purge runs once per
    `every` across every instance sharing it: each checks every `every / 24` seconds."""
    await asyncio.sleep(first_delay)
    check = every if guard is None else max(1.0, min(HOUR, every / 24))

    async def purge() -> None:
        purged = await purge_expired(db, retention_days)
        if purged:
            log.info("retention_purged", conversations=purged, days=retention_days)

    while True:
        try:
            if guard is None:
                await purge()
            else:
                outcome = await guard.run("retention", every, purge)
                log.debug("retention_checked", outcome=outcome)
        except Exception:
            log.exception("retention_failed")
        await asyncio.sleep(check)


@contextlib.asynccontextmanager
async def retention_job(
    db: Database, retention_days: int, *, guard: Guard | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """The daily purge as a background task of the app's lifespan."""
    task = asyncio.create_task(retention_loop(db, retention_days, guard=guard))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
