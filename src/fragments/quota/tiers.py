"""The figures a team's tier grants (chat requests and sandbox runs a day, a whole team's chat
requests a day, the monthly token budget), or an enterprise team's own `limits` in their place.
Read by the limiter, the budget routes and the operator's `fragments teams`."""

from __future__ import annotations

from typing import Any, Literal

from fragments.config import Settings
from fragments.store.models import Team

# What is counted: chat requests, sandbox runs, guest tokens minted.
Kind = Literal["chat", "sandbox", "guest_token"]


def override(team: Team | None, name: str) -> int | None:
    """An enterprise team's own figure for `name`, if it set one."""
    if team is None or team.tier != "enterprise":
        return None
    value: Any = (team.limits or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def monthly_budget(settings: Settings, team: Team | None) -> int | None:
    """The team's monthly token budget (input + output); None for an unknown tier."""
    own = override(team, "monthly_tokens")
    if own is not None:
        return own
    tier = team.tier if team is not None else "free"
    budgets = {
        "free": settings.token_budget_free,
        "pro": settings.token_budget_pro,
        "enterprise": settings.token_budget_enterprise,
    }
    return budgets.get(tier)


def daily_limit(settings: Settings, team: Team | None, kind: Kind) -> int:
    """A signed-in user's requests (`chat`) or sandbox runs a day: the team's tier's figure, or
    an enterprise team's own `limits.chat_per_day` / `limits.sandbox_per_day`."""
    if kind == "chat":
        limits = {
            "free": settings.rate_limit_free_per_day,
            "pro": settings.rate_limit_pro_per_day,
            "enterprise": settings.rate_limit_enterprise_per_day,
        }
    else:
        limits = {
            "free": settings.sandbox_limit_free_per_day,
            "pro": settings.sandbox_limit_pro_per_day,
            "enterprise": settings.sandbox_limit_enterprise_per_day,
        }
    custom = override(team, f"{kind}_per_day")
    if custom is not None:
        return custom
    return limits.get(team.tier if team is not None else "free", limits["free"])


def team_daily_limit(settings: Settings, team: Team | None) -> int:
    """A whole team's chat requests a day (all its members together): the tier's figure, or an
    enterprise team's own `limits.team_chat_per_day`."""
    custom = override(team, "team_chat_per_day")
    if custom is not None:
        return custom
    limits = {
        "free": settings.rate_limit_team_free_per_day,
        "pro": settings.rate_limit_team_pro_per_day,
        "enterprise": settings.rate_limit_team_enterprise_per_day,
    }
    return limits.get(team.tier if team is not None else "free", limits["free"])
