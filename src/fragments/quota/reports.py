"""The figures behind the usage routes: tokens and cost by day and model, the month so far,
sandbox time, and a team's month against its budget. Rows come from `usage_records` (one per
answer, and per summary) and `sandbox_usage` (one per run)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.config import Settings
from fragments.quota.budget import month_bounds, month_usage
from fragments.quota.schemas import TeamBudgetPublic, UsagePublic
from fragments.quota.tiers import monthly_budget
from fragments.store.db import Database, Identity, aware
from fragments.store.models import SandboxUsage, Team, UsageRecord

_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _figures() -> dict[str, Any]:
    return {"requests": 0, **dict.fromkeys(_FIELDS, 0), "cost_usd": 0.0}


def _empty() -> dict[str, Any]:
    # `own_key`: the part of the figures paid with the caller's own key (not charged).
    return {**_figures(), "own_key": _figures()}


def _sum(into: dict[str, Any], part: dict[str, Any]) -> None:
    into["requests"] += part["requests"]
    for name in _FIELDS:
        into[name] += part[name]
    into["cost_usd"] += part["cost_usd"]


def _add(into: dict[str, Any], row: UsageRecord) -> None:
    one = {
        "requests": 1,
        **{name: int(getattr(row, name) or 0) for name in _FIELDS},
        "cost_usd": float(row.cost_usd or 0.0),
    }
    _sum(into, one)
    if row.billed_to == "own_key":
        _sum(into["own_key"], one)


async def _sandbox_time(
    session: AsyncSession, team_id: str | None, user_id: str | None, since: datetime
) -> tuple[float, int]:
    """Seconds of sandbox runs and their number since `since`, for a team or a user."""
    owner = (
        SandboxUsage.team_id == team_id if team_id is not None else SandboxUsage.user_id == user_id
    )
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(SandboxUsage.seconds), 0.0), func.count(SandboxUsage.id)
            ).where(owner, SandboxUsage.created_at >= since)
        )
    ).one()
    return round(float(row[0] or 0.0), 3), int(row[1] or 0)


def _rounded(item: dict[str, Any]) -> dict[str, Any]:
    own = item["own_key"]
    return {
        **item,
        "cost_usd": round(item["cost_usd"], 6),
        "own_key": {**own, "cost_usd": round(own["cost_usd"], 6)},
    }


async def usage_report(
    session: AsyncSession, who: Identity, scope: Literal["me", "team"], days: int
) -> UsagePublic:
    """Usage of the last `days` days (UTC) by day and model, newest first, and the current
    calendar month so far: the caller's, or (`scope=team`) their current team's."""
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    since = min(now - timedelta(days=days), month_start)
    owner = (
        UsageRecord.team_id == who.team_id
        if scope == "team"
        else UsageRecord.user_id == who.user_id
    )
    rows = (
        await session.execute(select(UsageRecord).where(owner, UsageRecord.created_at >= since))
    ).scalars()
    first_day = (now - timedelta(days=days - 1)).date()
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    month = _empty()
    for row in rows:
        at = aware(row.created_at)
        if at >= month_start:
            _add(month, row)
        if at.date() < first_day:
            continue
        key = (at.date().isoformat(), row.model)
        _add(by_key.setdefault(key, _empty()), row)
    items = [
        {"day": day, "model": model, **_rounded(values)}
        for (day, model), values in sorted(
            by_key.items(), key=lambda kv: (kv[0][0], kv[0][1]), reverse=True
        )
    ]
    total = _empty()
    for item in items:
        _sum(total, item)
        _sum(total["own_key"], item["own_key"])
    team_id = who.team_id if scope == "team" else None
    window_start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    seconds, runs = await _sandbox_time(session, team_id, who.user_id, window_start)
    month_seconds, month_runs = await _sandbox_time(session, team_id, who.user_id, month_start)
    body = {
        "scope": scope,
        "days": days,
        "items": items,
        "total": {**_rounded(total), "sandbox_seconds": seconds, "sandbox_runs": runs},
        "month": {
            "start": month_start.date().isoformat(),
            **_rounded(month),
            "sandbox_seconds": month_seconds,
            "sandbox_runs": month_runs,
        },
    }
    return UsagePublic.model_validate(body)


async def team_budget_report(
    db: Database, settings: Settings, user_id: str, team: Team
) -> TeamBudgetPublic:
    """The team's tier, monthly token budget, what the platform paid for this calendar month
    (UTC) and its cost, what remains, and when the month resets; own-key usage apart."""
    start, reset = month_bounds()
    budget = monthly_budget(settings, team)
    # Read as the team (row-level security shows a team's rows to sessions acting for it).
    async with db.transaction(Identity(user_id, team.id)) as as_team:
        used = await month_usage(as_team, team.id, start)
        rows = await as_team.execute(
            select(
                UsageRecord.billed_to,
                func.coalesce(func.sum(UsageRecord.input_tokens + UsageRecord.output_tokens), 0),
                func.coalesce(func.sum(UsageRecord.cost_usd), 0.0),
            )
            .where(UsageRecord.team_id == team.id, UsageRecord.created_at >= start)
            .group_by(UsageRecord.billed_to)
        )
        by_payer = {payer: (int(tokens), float(cost or 0.0)) for payer, tokens, cost in rows.all()}
        sandbox_seconds, sandbox_runs = await _sandbox_time(as_team, team.id, None, start)
    cost = by_payer.get("platform", (0, 0.0))[1]
    own_tokens, own_cost = by_payer.get("own_key", (0, 0.0))
    return TeamBudgetPublic(
        team_id=team.id,
        tier=team.tier,
        monthly_tokens=budget,
        used_tokens=used,
        remaining_tokens=max(0, budget - used) if budget is not None else None,
        cost_usd=round(cost, 6),
        own_key_tokens=own_tokens,
        own_key_cost_usd=round(own_cost, 6),
        sandbox_seconds=sandbox_seconds,
        sandbox_runs=sandbox_runs,
        month=start.date().isoformat(),
        resets_at=reset.isoformat().replace("+00:00", "Z"),
    )
