"""GET /api/teams/{id}/budget: a team's admins see its monthly token budget against what it used;
members get 403, anyone outside the team 404. The operator sets an enterprise team's budget
(`fragments teams set-tier`, see test_team_plans); a free team's own figure is ignored. On
SQLite and PostgreSQL (row-level security on)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from fragments.app import state_of
from fragments.auth.plans import set_tier
from fragments.store.db import Database, Identity
from fragments.store.models import Team, UsageRecord
from tests.accounts import Account, sign_up

pytestmark = pytest.mark.anyio


async def me(api: httpx.AsyncClient, who: Account) -> dict[str, str]:
    body: dict[str, str] = (await api.get("/api/auth/me", headers=who.headers)).json()
    return body


async def spend(db: Database, user_id: str, team_id: str, tokens: int) -> None:
    async with db.transaction(Identity(user_id, team_id)) as session:
        session.add(
            UsageRecord(
                user_id=user_id,
                team_id=team_id,
                model="anthropic/claude-sonnet-5-5",
                input_tokens=tokens - 100,
                output_tokens=100,
                cost_usd=0.01,
            )
        )


async def test_admins_see_usage_against_budget_members_and_outsiders_do_not(
    api: httpx.AsyncClient, api_app: FastAPI
) -> None:
    owner = await sign_up(api, "owner")
    admin = await sign_up(api, "admin")
    member = await sign_up(api, "member")
    outsider = await sign_up(api, "outsider")
    team = (await api.post("/api/teams", json={"name": "Acme"}, headers=owner.headers)).json()
    tid = team["id"]
    for who, role in ((admin, "admin"), (member, "member")):
        added = await api.post(
            f"/api/teams/{tid}/members",
            json={"email": who.email, "role": role},
            headers=owner.headers,
        )
        assert added.status_code == 201, added.text
    # The operator makes it an enterprise team with its own budget.
    db = state_of(api_app).db
    await set_tier(db, tid, "enterprise", {"monthly_tokens": 5000})

    member_me, outsider_me = await me(api, member), await me(api, outsider)
    await spend(db, member_me["id"], tid, 1200)
    await spend(db, outsider_me["id"], outsider_me["team_id"], 999)  # another team's

    seen = await api.get(f"/api/teams/{tid}/budget", headers=admin.headers)
    assert seen.status_code == 200, seen.text
    body = seen.json()
    assert body["tier"] == "enterprise"
    assert body["monthly_tokens"] == 5000
    assert body["used_tokens"] == 1200
    assert body["remaining_tokens"] == 3800
    assert body["cost_usd"] == pytest.approx(0.01)
    resets = datetime.fromisoformat(body["resets_at"].replace("Z", "+00:00"))
    assert resets > datetime.now(UTC)
    assert (resets.day, resets.hour) == (1, 0)
    assert (await api.get(f"/api/teams/{tid}/budget", headers=owner.headers)).status_code == 200

    refused = await api.get(f"/api/teams/{tid}/budget", headers=member.headers)
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_role"
    hidden = await api.get(f"/api/teams/{tid}/budget", headers=outsider.headers)
    assert hidden.status_code == 404
    assert "1200" not in hidden.text
    assert (await api.get("/api/teams/nope/budget", headers=admin.headers)).status_code == 404
    # The team view of /api/usage is for admins too: the owner of a personal team sees its
    # rows; a member acting for Acme is refused, its admin is not.
    mine = await api.get("/api/usage?scope=team", headers=outsider.headers)
    assert mine.status_code == 200
    assert mine.json()["month"]["input_tokens"] == 899
    for who, status in ((member, 403), (admin, 200)):
        switched = await api.post(
            "/api/auth/switch-team", json={"team_id": tid}, headers=who.headers
        )
        assert switched.status_code == 200, switched.text
        headers = {"Authorization": f"Bearer {switched.json()['access_token']}"}
        team_view = await api.get("/api/usage?scope=team", headers=headers)
        assert team_view.status_code == status
    assert team_view.json()["month"]["input_tokens"] == 1100


async def test_a_free_team_cannot_raise_its_own_budget(
    api: httpx.AsyncClient, api_app: FastAPI
) -> None:
    alice = await sign_up(api, "alice")
    personal = (await me(api, alice))["team_id"]
    db = state_of(api_app).db
    async with db.transaction() as session:
        # Own figures stored on a free team (as an older version let its admins do) are ignored.
        team = await session.get(Team, personal)
        assert team is not None
        team.limits = {"monthly_tokens": 10**12}
    body = (await api.get(f"/api/teams/{personal}/budget", headers=alice.headers)).json()
    assert body["tier"] == "free"
    assert body["monthly_tokens"] == 2_000_000  # the tier's figure, not the team's own
    assert body["used_tokens"] == 0
    assert body["remaining_tokens"] == 2_000_000
