"""Response bodies of the usage and budget routes (the OpenAPI document describes them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class UsageFigures(BaseModel):
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float


class UsageFiguresPublic(UsageFigures):
    # The part of the figures paid with the caller's own key or server (not charged).
    own_key: UsageFigures


class UsageItemPublic(UsageFiguresPublic):
    day: str
    model: str


class UsageTotalPublic(UsageFiguresPublic):
    sandbox_seconds: float
    sandbox_runs: int


class UsageMonthPublic(UsageTotalPublic):
    start: str


class UsagePublic(BaseModel):
    scope: Literal["me", "team"]
    days: int
    items: list[UsageItemPublic]
    total: UsageTotalPublic
    month: UsageMonthPublic


class TeamBudgetPublic(BaseModel):
    team_id: str
    tier: str
    monthly_tokens: int | None
    used_tokens: int
    remaining_tokens: int | None
    cost_usd: float
    own_key_tokens: int
    own_key_cost_usd: float
    sandbox_seconds: float
    sandbox_runs: int
    month: str
    resets_at: str
