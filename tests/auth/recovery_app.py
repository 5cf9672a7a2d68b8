"""Shared set-up of the password-reset and address-confirmation tests: the app on the
parametrised database, with guests allowed or off, mailing through the test's SMTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from fragments.config import Settings
from fragments.store.db import Database
from fragments.store.models import EmailToken

PUBLIC_URL = "https://fragments.example"


@pytest.fixture(params=[True, False], ids=["guests", "no-guests"])
def guests(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def mail_settings(base: Settings, smtp_url: str | None, **extra: Any) -> Settings:
    """`base` (isolated, on the test's database) with mail pointed at `smtp_url`."""
    fields = base.model_dump() | {
        "smtp_url": smtp_url,
        "public_url": PUBLIC_URL,
        "mail_from": "Fragments <no-reply@fragments.example>",
        **extra,
    }
    # Through validation again, so the settings' own checks run as at start-up.
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    from fragments.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def age_links(settings: Settings, email: str, *, expire: bool = False) -> None:
    """Move the address's links an hour into the past (past the sending cooldown); with
    `expire`, past their expiry too. Straight in the database, as time passing would."""
    db = Database(settings.resolved_database_url)
    try:
        async with db.transaction() as session:
            hour_ago = datetime.now(UTC) - timedelta(hours=1, seconds=1)
            values: dict[str, datetime] = {"created_at": hour_ago}
            if expire:
                values["expires_at"] = hour_ago
            await session.execute(
                update(EmailToken).where(EmailToken.email == email).values(**values)
            )
    finally:
        await db.aclose()
