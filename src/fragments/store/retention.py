"""Retention: conversations not updated for `retention_days` are deleted (their messages,
fragments and results go with them), by a job the app runs daily and `fragments db purge`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import delete, select

from fragments.store.db import Database, Identity, aware
from fragments.store.models import Conversation, Membership, Team, User

log = structlog.get_logger(__name__)

DAY = 24 * 3600.0


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
    db: Database, retention_days: int, *, every: float = DAY, first_delay: float = 300.0
) -> None:
    """Run the purge after `first_delay` (start-up stays quick), then every `every` seconds
    until cancelled; failures are logged, never raised."""
    await asyncio.sleep(first_delay)
    while True:
        try:
            purged = await purge_expired(db, retention_days)
            if purged:
                log.info("retention_purged", conversations=purged, days=retention_days)
        except Exception:
            log.exception("retention_failed")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def retention_job(db: Database, retention_days: int) -> AsyncIterator[asyncio.Task[None]]:
    """The daily purge as a background task of the app's lifespan."""
    task = asyncio.create_task(retention_loop(db, retention_days))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
