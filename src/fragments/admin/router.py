"""The operator view: the page `/admin` (static; its data comes from the routes below, which
check the caller) and GET /api/admin/overview, for platform operators only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from fragments.admin.deps import OperatorUser
from fragments.admin.figures import stored_figures
from fragments.admin.live import live_figures
from fragments.admin.public import OverviewPublic
from fragments.state import get_db
from fragments.store.db import Identity
from fragments.store.errors import DB_DOWN, DatabaseUnavailable

router = APIRouter(tags=["admin"])


def _page() -> str:
    return str(resources.files("fragments.web").joinpath("static", "admin.html"))


@router.get("/admin", include_in_schema=False)
async def admin_page() -> FileResponse:
    # The page holds no data: it asks the routes below with the signed-in token it keeps.
    return FileResponse(_page(), headers={"Cache-Control": "no-cache"})


@router.get("/api/admin/overview")
async def overview(
    request: Request,
    user: OperatorUser,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
) -> OverviewPublic:
    """Every team's model calls, tokens and cost per day, per team and per model, sandbox runs
    and their p95 over the last `days` days (UTC, today included), from the stored usage; and
    the live figures (requests, errors, p95s, SLOs) from the app's metrics when it has them."""
    now = datetime.now(UTC)
    first_day = (now - timedelta(days=days - 1)).date()
    db = get_db(request)
    who = Identity(user.user_id or "", user.team_id or "", operator=True)
    try:
        async with db.transaction(who) as session:
            stored = await stored_figures(session, db.is_postgres, first_day)
    except DB_DOWN as exc:
        raise DatabaseUnavailable() from exc
    return OverviewPublic(
        days=days,
        since=first_day.isoformat(),
        generated_at=now.isoformat().replace("+00:00", "Z"),
        totals=stored.totals,
        daily=stored.daily,
        teams=stored.teams,
        models=stored.models,
        live=live_figures(),
    )
