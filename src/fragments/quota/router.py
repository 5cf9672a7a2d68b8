"""GET /api/usage: tokens and cost by day and model, for the caller or (team admins) their team,
and the current month's total; GET /api/teams/{id}/budget: a team's monthly token budget, used
and remaining, for its admins. Rows come from `usage_records` (one per answer, and per summary).

Every figure of /api/usage counts all usage (as before); its `own_key` part is what the caller's
own API key or server paid for, which the budget does not charge. Sandbox time (rows of
`sandbox_usage`, one per run: seconds from asking for the sandbox to its result) is reported
beside the tokens as `sandbox_seconds` and `sandbox_runs`, in `total` and `month`, and in the
team's budget for the month.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.auth.deps import SessionDep, SignedInUser
from fragments.auth.service import membership
from fragments.auth.tokens import Forbidden
from fragments.errors import NotFound
from fragments.principal import Principal
from fragments.quota.reports import team_budget_report, usage_report
from fragments.quota.schemas import TeamBudgetPublic, UsagePublic
from fragments.state import get_db, get_state
from fragments.store.models import Team

router = APIRouter(tags=["usage"])

_ADMINS = ("admin", "owner")


async def _admin_team(session: AsyncSession, user: Principal, team_id: str) -> Team:
    """The team, if the caller is one of its admins: 404 for a team they are not in (nothing
    revealed), 403 for a member."""
    assert user.user_id is not None
    mine = await membership(session, user.user_id, team_id)
    team = await session.get(Team, team_id) if mine is not None else None
    if mine is None or team is None:
        raise NotFound("There is no such team.")
    if mine.role not in _ADMINS:
        raise Forbidden("Only a team admin can see the team's usage.", code="insufficient_role")
    return team


@router.get("/api/usage")
async def usage(
    user: SignedInUser,
    session: SessionDep,
    days: Annotated[int, Query(ge=1, le=366)] = 31,
    scope: Literal["me", "team"] = "me",
) -> UsagePublic:
    """Usage of the last `days` days (UTC) by day and model, newest first; `month` is the
    current calendar month so far. `scope=team`: the current team's, for its admins only."""
    if scope == "team":
        await _admin_team(session, user, user.team_id or "")
    return await usage_report(session, user.identity, scope, days)


@router.get("/api/teams/{team_id}/budget")
async def team_budget(
    team_id: str, request: Request, user: SignedInUser, session: SessionDep
) -> TeamBudgetPublic:
    """The team's tier, monthly token budget (input + output), what the platform paid for this
    calendar month (UTC) and its cost, what remains, and when the month resets; for the team's
    admins. Own-key usage is reported apart (`own_key_tokens`) and not charged."""
    team = await _admin_team(session, user, team_id)
    assert user.user_id is not None
    state = get_state(request)
    return await team_budget_report(get_db(request), state.settings, user.user_id, team)
