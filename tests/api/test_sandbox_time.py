"""Sandbox time is recorded per team for billing: each run of a signed-in caller stores the
seconds from asking for the sandbox to its result, tagged with the team it acts for, shown as
`sandbox_seconds` / `sandbox_runs` in GET /api/usage (the caller's, or scope=team) and in the
team's budget. Another team never sees it (row-level security on PostgreSQL). SQLite and
PostgreSQL, guests allowed and off. The sandbox itself is stubbed: these tests are about the
accounting."""

from __future__ import annotations

import secrets
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from fragments.auth import service
from fragments.config import Settings
from fragments.store.db import Database, Identity
from fragments.store.models import SandboxUsage
from tests.accounts import bearer
from tests.apps import app_client, client_state
from tests.fakes.sandboxes import FakeSandboxes

pytestmark = pytest.mark.anyio

RUN = {"fragment": {"template": "code-interpreter-v1", "code": "print(1)"}}
STREAM = {"Accept": "text/event-stream"}


@pytest.fixture(params=[True, False], ids=["guests", "no-guests"])
def allow_guests(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def timed_client(settings: Settings) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    # A run takes some time.
    return app_client(settings, sandboxes=FakeSandboxes(delay=0.01))


def _db(client: httpx.AsyncClient) -> Database:
    return client_state(client).db


async def _account(client: httpx.AsyncClient, settings: Settings, name: str) -> str:
    """A new account's access token, made through the sign-up service (the HTTP route's own
    behaviour with guests off is tested elsewhere)."""
    async with _db(client).transaction() as session:
        pair = await service.signup(
            session, settings, f"{name}-{secrets.token_hex(4)}@example.com", "horse battery"
        )
    return pair.access_token


async def _me(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    me = await client.get("/api/auth/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    body: dict[str, Any] = me.json()
    return body


async def _usage(client: httpx.AsyncClient, token: str, scope: str = "me") -> dict[str, Any]:
    response = await client.get(f"/api/usage?scope={scope}", headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_runs_are_timed_per_team_and_shown_in_usage(
    db_settings: Settings, allow_guests: bool
) -> None:
    settings = db_settings.model_copy(update={"allow_guests": allow_guests})
    async with timed_client(settings) as client:
        alice = await _account(client, settings, "alice")
        bob = await _account(client, settings, "bob")
        # Alice runs twice, as JSON and as a stream; bob once.
        assert (await client.post("/api/sandbox", json=RUN, headers=bearer(alice))).is_success
        streamed = await client.post("/api/sandbox", json=RUN, headers={**bearer(alice), **STREAM})
        assert streamed.status_code == 200
        assert "event: result" in streamed.text
        assert (await client.post("/api/sandbox", json=RUN, headers=bearer(bob))).is_success

        mine = await _usage(client, alice)
        for part in ("total", "month"):
            assert mine[part]["sandbox_runs"] == 2
            assert mine[part]["sandbox_seconds"] > 0
        team = await _usage(client, alice, "team")
        assert team["month"]["sandbox_runs"] == 2
        alice_team = (await _me(client, alice))["team_id"]
        budget = await client.get(f"/api/teams/{alice_team}/budget", headers=bearer(alice))
        assert budget.status_code == 200, budget.text
        assert budget.json()["sandbox_runs"] == 2
        assert budget.json()["sandbox_seconds"] == team["month"]["sandbox_seconds"]

        # Bob's team sees its own run only, and cannot read alice's team at all.
        assert (await _usage(client, bob, "team"))["month"]["sandbox_runs"] == 1
        other = await client.get(f"/api/teams/{alice_team}/budget", headers=bearer(bob))
        assert other.status_code == 404

        # In the database: a session acting for bob's team sees no row of alice's team.
        bob_me = await _me(client, bob)
        db = _db(client)
        async with db.transaction(Identity(bob_me["id"], bob_me["team_id"])) as session:
            seen = await session.execute(
                select(func.count(SandboxUsage.id)).where(SandboxUsage.team_id == alice_team)
            )
            assert seen.scalar_one() == (0 if db.is_postgres else 2)
        async with db.transaction(Identity("", alice_team)) as session:
            rows = (
                await session.execute(
                    select(SandboxUsage).where(SandboxUsage.team_id == alice_team)
                )
            ).scalars()
            assert sorted(row.template for row in rows) == ["code-interpreter-v1"] * 2


async def test_a_shared_teams_runs_add_up_for_its_admins(
    db_settings: Settings, allow_guests: bool
) -> None:
    settings = db_settings.model_copy(update={"allow_guests": allow_guests})
    async with timed_client(settings) as client:
        owner = await _account(client, settings, "owner")
        member = await _account(client, settings, "member")
        made = await client.post("/api/teams", json={"name": "Shop"}, headers=bearer(owner))
        team_id = made.json()["id"]
        member_email = (await _me(client, member))["email"]
        added = await client.post(
            f"/api/teams/{team_id}/members", json={"email": member_email}, headers=bearer(owner)
        )
        assert added.status_code == 201, added.text
        acting = []
        for token in (owner, member):
            switched = await client.post(
                "/api/auth/switch-team", json={"team_id": team_id}, headers=bearer(token)
            )
            acting.append(switched.json()["access_token"])
        for token in acting:
            assert (await client.post("/api/sandbox", json=RUN, headers=bearer(token))).is_success
        # The team's admin sees both members' runs; a member may not see the team's usage.
        assert (await _usage(client, acting[0], "team"))["month"]["sandbox_runs"] == 2
        assert (await _usage(client, acting[1]))["month"]["sandbox_runs"] == 1
        denied = await client.get("/api/usage?scope=team", headers=bearer(acting[1]))
        assert denied.status_code == 403


async def test_an_anonymous_guests_run_stores_nothing_and_a_guest_tokens_run_is_its_own(
    db_settings: Settings,
) -> None:
    settings = db_settings.model_copy(update={"allow_guests": True})
    async with timed_client(settings) as client:
        assert (await client.post("/api/sandbox", json=RUN)).is_success
        guest = (await client.post("/api/auth/guest")).json()["access_token"]
        assert (await _usage(client, guest))["month"]["sandbox_runs"] == 0
        assert (await client.post("/api/sandbox", json=RUN, headers=bearer(guest))).is_success
        assert (await _usage(client, guest))["month"]["sandbox_runs"] == 1
