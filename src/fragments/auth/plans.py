"""Teams' plans, for the operator (`fragments teams`): find a team by id or name, set its tier
and an enterprise team's own limits, and describe what is in force and what it used this month.

A team's tier and an enterprise team's limits (monthly token budget, chat requests and sandbox
runs a day) decide what the platform pays for, so only the operator sets them; PATCH
/api/teams/{id} refuses them. `teams` has no row-level security; the team's usage is read acting
for the team (`app.team_id`), which the usage policy allows, so on PostgreSQL the app's role
suffices and no role that bypasses RLS is needed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.config import Settings
from fragments.quota.budget import month_bounds, month_usage
from fragments.quota.tiers import daily_limit, monthly_budget, team_daily_limit
from fragments.store.db import Database, Identity
from fragments.store.models import Membership, SandboxUsage, Team, UsageRecord, User


class TeamError(Exception):
    """A team that cannot be named unambiguously, or a change that does not apply."""


async def find_team(session: AsyncSession, key: str) -> Team:
    """The team with id `key`, else the one team named `key` (names are not unique)."""
    rows = await session.execute(select(Team).where(or_(Team.id == key, Team.name == key)))
    found = list(rows.scalars())
    by_id = [team for team in found if team.id == key]
    if by_id:
        return by_id[0]
    if not found:
        raise TeamError(f"No team has the id or name {key!r}.")
    if len(found) > 1:
        ids = ", ".join(sorted(team.id for team in found))
        raise TeamError(f"{len(found)} teams are named {key!r}; name one by its id: {ids}")
    return found[0]


async def set_tier(
    db: Database, key: str, tier: str, limits: dict[str, int], *, clear_limits: bool = False
) -> str:
    """Set the team's tier and merge `limits` into its own figures; returns the team's id."""
    if limits and tier != "enterprise":
        # Own figures apply to enterprise teams only; storing them elsewhere would only mislead.
        raise TeamError(
            "--monthly-tokens, --chat-per-day, --sandbox-per-day and --team-chat-per-day "
            "need enterprise."
        )
    async with db.transaction() as session:
        team = await find_team(session, key)
        own = {} if clear_limits else dict(team.limits or {})
        own.update(limits)
        team.tier = tier
        team.limits = own
        await session.flush()
        return team.id


async def describe(db: Database, settings: Settings, key: str) -> dict[str, Any]:
    """The team's plan, its figures in force, and its usage this month (platform and own key)."""
    async with db.transaction() as session:
        team = await find_team(session, key)
        owners = await session.execute(
            select(User.email)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.team_id == team.id, Membership.role == "owner")
            .order_by(User.email)
        )
        emails = [email for email in owners.scalars() if email]
    start, reset = month_bounds()
    budget = monthly_budget(settings, team)
    async with db.transaction(Identity("", team.id)) as as_team:
        used = await month_usage(as_team, team.id, start)
        own = await as_team.execute(
            select(UsageRecord.input_tokens + UsageRecord.output_tokens).where(
                UsageRecord.team_id == team.id,
                UsageRecord.created_at >= start,
                UsageRecord.billed_to == "own_key",
            )
        )
        own_tokens = sum(int(n or 0) for n in own.scalars())
        sandbox = await as_team.execute(
            select(SandboxUsage.seconds).where(
                SandboxUsage.team_id == team.id, SandboxUsage.created_at >= start
            )
        )
        sandbox_seconds = round(sum(float(n or 0.0) for n in sandbox.scalars()), 3)
    return {
        "id": team.id,
        "name": team.name,
        "personal": team.personal,
        "owners": emails,
        "tier": team.tier,
        "limits": dict(team.limits or {}),
        "monthly_tokens": budget,
        "chat_per_day": daily_limit(settings, team, "chat"),
        "sandbox_per_day": daily_limit(settings, team, "sandbox"),
        "team_chat_per_day": team_daily_limit(settings, team),
        "month": start.date().isoformat(),
        "used_tokens": used,
        "remaining_tokens": max(0, budget - used) if budget is not None else None,
        "own_key_tokens": own_tokens,
        "sandbox_seconds": sandbox_seconds,
        "resets_at": reset.isoformat().replace("+00:00", "Z"),
    }
