"""The stored figures of the operator view, for every team: model calls, tokens and cost per
day, per team and per model (`usage_records`: one row per answer and per summary), sandbox runs
and their time (`sandbox_usage`: one row per run of a signed-in caller). `cost_usd` is what the
platform's keys cost; what callers' own keys cost is apart (`own_key_cost_usd`). Anonymous
guests store no rows, so they are not in these figures (the live figures count them)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from fragments.admin.public import (
    DayPublic,
    ModelCostPublic,
    TeamCostPublic,
    TotalsPublic,
)
from fragments.store.models import SandboxUsage, Team, UsageRecord

TOP_TEAMS = 50


@dataclass
class _Tally:
    llm_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    own_key_cost_usd: float = 0.0
    sandbox_runs: int = 0
    sandbox_seconds: float = 0.0
    seconds: list[float] = field(default_factory=list)


def _day(column: Any, is_postgres: bool) -> ColumnElement[Any]:
    """The UTC calendar day of a stored time, as SQL (PostgreSQL's date() would use the
    session's time zone; SQLite stores UTC text)."""
    if is_postgres:
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def p95(values: list[float]) -> float | None:
    """The 95th percentile (nearest rank) of the values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-95 * len(ordered) // 100))  # ceil(0.95 n)
    return round(ordered[rank - 1], 3)


@dataclass
class StoredFigures:
    totals: TotalsPublic
    daily: list[DayPublic]
    teams: list[TeamCostPublic]
    models: list[ModelCostPublic]


async def stored_figures(
    session: AsyncSession, is_postgres: bool, first_day: date
) -> StoredFigures:
    """Every team's figures from `first_day` (UTC) to today. The session must be allowed to read
    every team's rows (an operator's, on PostgreSQL)."""
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    usage_day = _day(UsageRecord.created_at, is_postgres)
    tokens = func.coalesce(func.sum(UsageRecord.input_tokens + UsageRecord.output_tokens), 0)
    cost = func.coalesce(func.sum(UsageRecord.cost_usd), 0.0)
    usage = await session.execute(
        select(
            usage_day,
            UsageRecord.team_id,
            UsageRecord.model,
            UsageRecord.billed_to,
            func.count(UsageRecord.id),
            tokens,
            cost,
        )
        .where(UsageRecord.created_at >= since)
        .group_by(usage_day, UsageRecord.team_id, UsageRecord.model, UsageRecord.billed_to)
    )
    days: dict[str, _Tally] = defaultdict(_Tally)
    teams: dict[str, _Tally] = defaultdict(_Tally)
    models: dict[str, _Tally] = defaultdict(_Tally)
    total = _Tally()
    for day, team_id, model, payer, calls, used, spent in usage.all():
        for tally in (days[_iso(day)], teams[team_id], models[model], total):
            tally.llm_calls += int(calls)
            tally.tokens += int(used)
            if payer == "own_key":
                tally.own_key_cost_usd += float(spent)
            else:
                tally.cost_usd += float(spent)
    runs = await session.execute(
        select(
            _day(SandboxUsage.created_at, is_postgres), SandboxUsage.team_id, SandboxUsage.seconds
        ).where(SandboxUsage.created_at >= since)
    )
    for day, team_id, seconds in runs.all():
        for tally in (days[_iso(day)], teams[team_id], total):
            tally.sandbox_runs += 1
            tally.sandbox_seconds += float(seconds)
            tally.seconds.append(float(seconds))
    people = await session.execute(
        select(func.count(func.distinct(UsageRecord.user_id))).where(
            UsageRecord.created_at >= since
        )
    )
    return StoredFigures(
        totals=TotalsPublic(
            llm_calls=total.llm_calls,
            tokens=total.tokens,
            cost_usd=round(total.cost_usd, 6),
            own_key_cost_usd=round(total.own_key_cost_usd, 6),
            sandbox_runs=total.sandbox_runs,
            sandbox_seconds=round(total.sandbox_seconds, 3),
            sandbox_p95_seconds=p95(total.seconds),
            teams=len(teams),
            users=int(people.scalar_one() or 0),
        ),
        daily=_daily(days, first_day),
        teams=await _teams(session, teams),
        models=sorted(
            (
                ModelCostPublic(
                    model=model,
                    llm_calls=tally.llm_calls,
                    tokens=tally.tokens,
                    cost_usd=round(tally.cost_usd, 6),
                )
                for model, tally in models.items()
            ),
            key=lambda item: (-item.cost_usd, -item.tokens, item.model),
        ),
    )


def _daily(days: dict[str, _Tally], first_day: date) -> list[DayPublic]:
    today = datetime.now(UTC).date()
    out = []
    day = first_day
    while day <= today:
        tally = days.get(day.isoformat(), _Tally())
        out.append(
            DayPublic(
                day=day.isoformat(),
                llm_calls=tally.llm_calls,
                tokens=tally.tokens,
                cost_usd=round(tally.cost_usd, 6),
                own_key_cost_usd=round(tally.own_key_cost_usd, 6),
                sandbox_runs=tally.sandbox_runs,
                sandbox_seconds=round(tally.sandbox_seconds, 3),
                sandbox_p95_seconds=p95(tally.seconds),
            )
        )
        day += timedelta(days=1)
    return out


async def _teams(session: AsyncSession, teams: dict[str, _Tally]) -> list[TeamCostPublic]:
    ranked = sorted(
        teams.items(), key=lambda kv: (-kv[1].cost_usd, -kv[1].tokens, -kv[1].sandbox_runs)
    )[:TOP_TEAMS]
    ids = [team_id for team_id, _ in ranked]
    found = await session.execute(select(Team.id, Team.name, Team.tier).where(Team.id.in_(ids)))
    about = {team_id: (name, tier) for team_id, name, tier in found.all()}
    return [
        TeamCostPublic(
            team_id=team_id,
            name=about.get(team_id, ("", ""))[0],
            tier=about.get(team_id, ("", ""))[1],
            llm_calls=tally.llm_calls,
            tokens=tally.tokens,
            cost_usd=round(tally.cost_usd, 6),
            own_key_cost_usd=round(tally.own_key_cost_usd, 6),
            sandbox_runs=tally.sandbox_runs,
            sandbox_seconds=round(tally.sandbox_seconds, 3),
        )
        for team_id, tally in ranked
    ]
