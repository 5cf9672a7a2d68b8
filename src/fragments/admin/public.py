"""What GET /api/admin/overview answers (an operator's view of the whole service)."""

from __future__ import annotations

from pydantic import BaseModel


class DayPublic(BaseModel):
    day: str
    llm_calls: int
    tokens: int
    cost_usd: float
    own_key_cost_usd: float
    sandbox_runs: int
    sandbox_seconds: float
    sandbox_p95_seconds: float | None


class TeamCostPublic(BaseModel):
    team_id: str
    name: str
    tier: str
    llm_calls: int
    tokens: int
    cost_usd: float
    own_key_cost_usd: float
    sandbox_runs: int
    sandbox_seconds: float


class ModelCostPublic(BaseModel):
    model: str
    llm_calls: int
    tokens: int
    cost_usd: float


class TotalsPublic(BaseModel):
    llm_calls: int
    tokens: int
    cost_usd: float
    own_key_cost_usd: float
    sandbox_runs: int
    sandbox_seconds: float
    sandbox_p95_seconds: float | None
    teams: int
    users: int


class SloPublic(BaseModel):
    name: str
    objective: str
    # The share of good events the objective asks for, and the share measured (None: no data).
    target: float
    value: float | None
    met: bool | None


class LivePublic(BaseModel):
    """Since the app's processes started, from its Prometheus metrics."""

    http_requests: int
    http_errors: int
    http_error_ratio: float | None
    http_p95_seconds: float | None
    llm_requests: int
    llm_errors: int
    llm_error_ratio: float | None
    answer_p95_seconds: float | None
    first_token_p95_seconds: float | None
    sandbox_runs: int
    sandbox_errors: int
    sandbox_error_ratio: float | None
    sandbox_create_p95_seconds: float | None
    sandbox_run_p95_seconds: float | None
    cost_usd: float
    slos: list[SloPublic]


class OverviewPublic(BaseModel):
    days: int
    # The first day counted (UTC) and when the figures were read.
    since: str
    generated_at: str
    totals: TotalsPublic
    # Every day of the window, oldest first (days without usage are zeros).
    daily: list[DayPublic]
    # Teams by the platform's cost, highest first (at most 50).
    teams: list[TeamCostPublic]
    models: list[ModelCostPublic]
    # None when the process has no metrics (see the README).
    live: LivePublic | None
