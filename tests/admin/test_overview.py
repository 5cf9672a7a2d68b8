"""GET /api/admin/overview: every team's model calls, tokens and cost per day, per team and per
model, and sandbox runs with their p95, computed from seeded rows — on SQLite and on a fresh
PostgreSQL database (row-level security on: the operator reads every team's rows, nobody else
does). 401 for nobody signed in, 403 for guests and ordinary accounts, in both auth modes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from fragments.auth import service
from fragments.auth.operators import set_operator
from fragments.auth.tokens import decode_access_token
from fragments.config import Settings
from fragments.store.db import Database, Identity
from fragments.store.models import SandboxUsage, UsageRecord
from tests.accounts import bearer
from tests.apps import app_client, client_state
from tests.databases import APP_ROLE, PgDatabase, create_pg_database, drop_pg_database
from tests.modes import AuthMode, anonymous, mode_settings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PgDatabase | None]:
    """A PostgreSQL database of this module's own: the overview sums every team's rows, so the
    run's shared database (other tests' rows) would blur the figures."""
    try:
        db = create_pg_database()
    except (OSError, ConnectionError):
        yield None
        return
    try:
        yield db
    finally:
        drop_pg_database(db)


async def _empty_usage(pg: PgDatabase) -> None:
    """Start from no usage (the module's tests share the database): TRUNCATE is the owner's
    and is not bound by row-level security."""
    import asyncpg

    conn = await asyncpg.connect(pg.owner_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute("TRUNCATE usage_records, sandbox_usage")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def overview_settings(
    request: pytest.FixtureRequest, own_pg: PgDatabase | None, data_dir: Path, auth_mode: AuthMode
) -> Settings:
    extra: dict[str, object] = {}
    if request.param == "postgresql":
        if own_pg is None:
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is unreachable (it runs on dev and CI)")
        asyncio.run(_empty_usage(own_pg))
        extra = {
            "database_url": own_pg.app_url,
            "database_migration_url": own_pg.owner_url,
            "database_app_role": APP_ROLE,
        }
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        anthropic_api_key=None,
        openai_api_key=None,
        **extra,  # type: ignore[arg-type]
        **mode_settings(auth_mode),  # type: ignore[arg-type]
    )


@dataclass
class Person:
    email: str
    token: str
    user_id: str
    team_id: str

    @property
    def identity(self) -> Identity:
        return Identity(self.user_id, self.team_id)


async def _person(db: Database, settings: Settings, name: str) -> Person:
    email = f"{name}-{secrets.token_hex(4)}@example.com"
    async with db.transaction() as session:
        pair = await service.signup(session, settings, email, "horse battery staple")
    claims = decode_access_token(pair.access_token, settings.secret_key.get_secret_value())
    assert claims.user_id is not None
    assert claims.team_id is not None
    return Person(email, pair.access_token, claims.user_id, claims.team_id)


async def _usage(db: Database, who: Person, at: datetime, model: str, **figures: Any) -> None:
    async with db.transaction(who.identity) as session:
        session.add(
            UsageRecord(
                user_id=who.user_id,
                team_id=who.team_id,
                model=model,
                created_at=at,
                **{"billed_to": "platform", **figures},
            )
        )


async def _run(db: Database, who: Person, at: datetime, seconds: float) -> None:
    async with db.transaction(who.identity) as session:
        session.add(
            SandboxUsage(
                user_id=who.user_id,
                team_id=who.team_id,
                template="code-interpreter-v1",
                seconds=seconds,
                created_at=at,
            )
        )


@pytest.fixture
async def client(overview_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(overview_settings) as http:
        yield http


async def _seeded(client: httpx.AsyncClient, settings: Settings) -> dict[str, Person]:
    db = client_state(client).db
    people = {name: await _person(db, settings, name) for name in ("ops", "alice", "bob")}
    await set_operator(db, people["ops"].email, True)
    now = datetime.now(UTC)
    today, yesterday = now - timedelta(seconds=1), now - timedelta(days=1)
    long_ago = now - timedelta(days=40)
    alice, bob = people["alice"], people["bob"]
    await _usage(db, alice, today, "gpt-4o", input_tokens=100, output_tokens=50, cost_usd=0.5)
    await _usage(db, alice, today, "claude", input_tokens=200, output_tokens=100, cost_usd=1.0)
    await _usage(
        db, alice, yesterday, "gpt-4o", input_tokens=10, output_tokens=10, cost_usd=0.1,
        billed_to="own_key",
    )  # fmt: skip
    await _usage(db, alice, long_ago, "gpt-4o", input_tokens=5000, cost_usd=5.0)
    await _usage(db, bob, today, "claude", input_tokens=1000, cost_usd=2.0)
    for who, at, seconds in (
        (bob, today, 1.0),
        (bob, today, 3.0),
        (bob, yesterday, 2.0),
        (alice, today, 5.0),
        (alice, long_ago, 50.0),
    ):
        await _run(db, who, at, seconds)
    return people


async def _overview(client: httpx.AsyncClient, token: str, days: int = 7) -> dict[str, Any]:
    response = await client.get(f"/api/admin/overview?days={days}", headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_operator_sees_every_teams_figures(
    client: httpx.AsyncClient, overview_settings: Settings
) -> None:
    people = await _seeded(client, overview_settings)
    body = await _overview(client, people["ops"].token)

    assert body["days"] == 7
    assert body["totals"] == {
        "llm_calls": 4,
        "tokens": 150 + 300 + 20 + 1000,
        "cost_usd": 3.5,
        "own_key_cost_usd": 0.1,
        "sandbox_runs": 4,
        "sandbox_seconds": 11.0,
        "sandbox_p95_seconds": 5.0,
        "teams": 2,
        "users": 2,
    }
    days = body["daily"]
    assert len(days) == 7
    assert days[-1]["day"] == datetime.now(UTC).date().isoformat()
    assert days[0]["day"] == body["since"]
    today, yesterday = days[-1], days[-2]
    assert (today["llm_calls"], today["cost_usd"], today["tokens"]) == (3, 3.5, 1450)
    assert (today["sandbox_runs"], today["sandbox_seconds"]) == (3, 9.0)
    assert today["sandbox_p95_seconds"] == 5.0
    assert (yesterday["llm_calls"], yesterday["cost_usd"], yesterday["own_key_cost_usd"]) == (
        1,
        0.0,
        0.1,
    )
    assert (yesterday["sandbox_runs"], yesterday["sandbox_p95_seconds"]) == (1, 2.0)
    assert all(day["llm_calls"] == 0 and day["sandbox_p95_seconds"] is None for day in days[:-2])

    # Teams by the platform's cost: bob's (2.0) before alice's (1.5); the operator's has none.
    teams = body["teams"]
    assert [team["team_id"] for team in teams] == [people["bob"].team_id, people["alice"].team_id]
    assert teams[0]["cost_usd"] == 2.0
    alice = teams[1]
    assert (alice["cost_usd"], alice["own_key_cost_usd"], alice["tokens"]) == (1.5, 0.1, 470)
    assert (teams[0]["sandbox_runs"], teams[1]["sandbox_runs"]) == (3, 1)
    assert teams[0]["tier"] == "free"
    assert teams[0]["name"]
    assert [(m["model"], m["llm_calls"], m["tokens"], m["cost_usd"]) for m in body["models"]] == [
        ("claude", 2, 1300, 3.0),
        ("gpt-4o", 2, 170, 0.5),
    ]

    # A wider window takes in the rows of 40 days ago.
    wide = await _overview(client, people["ops"].token, days=60)
    assert len(wide["daily"]) == 60
    assert wide["totals"]["cost_usd"] == 8.5
    assert wide["totals"]["sandbox_runs"] == 5


async def test_nobody_else_gets_in(
    client: httpx.AsyncClient, overview_settings: Settings, auth_mode: AuthMode
) -> None:
    people = await _seeded(client, overview_settings)
    url = "/api/admin/overview"

    nobody = await client.get(url, headers=anonymous())
    assert nobody.status_code == 401
    assert set(nobody.json()) >= {"error", "detail"}
    forged = await client.get(url, headers=bearer("not-a-token"))
    assert forged.status_code == 401

    refused = await client.get(url, headers=bearer(people["alice"].token))
    assert refused.status_code == 403
    assert refused.json()["error"] == "operator_only"
    if auth_mode == "guests":
        guest = await client.post("/api/auth/guest", json={})
        assert guest.status_code in (200, 201), guest.text
        as_guest = await client.get(url, headers=bearer(guest.json()["access_token"]))
        assert as_guest.status_code == 403

    # Removing an operator takes effect at the next request, whatever the token says.
    db = client_state(client).db
    assert (await client.get(url, headers=bearer(people["ops"].token))).status_code == 200
    await set_operator(db, people["ops"].email, False)
    assert (await client.get(url, headers=bearer(people["ops"].token))).status_code == 403


@pytest.mark.parametrize("days", ["0", "367", "-1", "a week", "1.5"])
async def test_a_bad_window_is_a_clear_error(
    client: httpx.AsyncClient, overview_settings: Settings, days: str
) -> None:
    db = client_state(client).db
    ops = await _person(db, overview_settings, "ops")
    await set_operator(db, ops.email, True)
    response = await client.get(
        "/api/admin/overview", params={"days": days}, headers=bearer(ops.token)
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"]
    assert isinstance(body["detail"], str)


async def test_row_level_security_lets_only_operators_read_across_teams(
    client: httpx.AsyncClient, overview_settings: Settings
) -> None:
    people = await _seeded(client, overview_settings)
    db = client_state(client).db
    if not db.is_postgres:
        pytest.skip("row-level security is PostgreSQL's (SQLite has none)")
    alice, ops = people["alice"], people["ops"]

    async def visible(identity: Identity) -> tuple[int, int]:
        async with db.transaction(identity) as session:
            usage = await session.execute(select(func.count(UsageRecord.id)))
            runs = await session.execute(select(func.count(SandboxUsage.id)))
            return int(usage.scalar_one()), int(runs.scalar_one())

    # Asking for operator access is not enough: the account must be an operator.
    assert await visible(Identity(alice.user_id, alice.team_id, operator=True)) == (4, 2)
    # An operator sees only their own rows unless the transaction asks.
    assert await visible(Identity(ops.user_id, ops.team_id)) == (0, 0)
    assert await visible(Identity(ops.user_id, ops.team_id, operator=True)) == (5, 5)


async def test_the_admin_page_is_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/admin", headers=anonymous())
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/js/admin.js">' in page.text


async def test_no_usage_is_zeros(client: httpx.AsyncClient, overview_settings: Settings) -> None:
    db = client_state(client).db
    ops = await _person(db, overview_settings, "ops")
    await set_operator(db, ops.email, True)
    body = await _overview(client, ops.token, days=1)
    assert body["totals"]["llm_calls"] == 0
    assert body["totals"]["sandbox_p95_seconds"] is None
    assert body["teams"] == []
    assert body["models"] == []
    assert [day["day"] for day in body["daily"]] == [datetime.now(UTC).date().isoformat()]


async def test_the_live_figures_count_the_apps_own_requests(
    client: httpx.AsyncClient, overview_settings: Settings
) -> None:
    import importlib

    try:
        importlib.import_module("fragments.observability.metrics")
    except ImportError:
        pytest.skip("fragments.observability.metrics (the app's Prometheus metrics) is missing")
    db = client_state(client).db
    ops = await _person(db, overview_settings, "ops")
    await set_operator(db, ops.email, True)
    before = (await _overview(client, ops.token))["live"]
    for _ in range(3):
        assert (await client.get("/api/models")).status_code == 200
    after = (await _overview(client, ops.token))["live"]
    assert after is not None
    # The two overview calls and the three model lists at least (metrics are process-wide).
    assert after["http_requests"] >= (before["http_requests"] if before else 0) + 4
    assert {slo["name"] for slo in after["slos"]} == {
        "availability",
        "first_token",
        "sandbox_create",
    }
