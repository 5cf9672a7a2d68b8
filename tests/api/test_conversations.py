"""The conversations API, scoped to the caller: own conversations and the team's shared ones;
another tenant's id answers 404 on every route."""

from __future__ import annotations

import httpx
import pytest

from fragments.config import Settings
from fragments.store.db import Database
from fragments.store.models import Membership
from tests.accounts import Account, bearer, sign_up

pytestmark = pytest.mark.anyio


async def create(api: httpx.AsyncClient, account: Account, title: str) -> str:
    response = await api.post("/api/conversations", json={"title": title}, headers=account.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def join_team(
    settings: Settings, api: httpx.AsyncClient, member: Account, owner: Account
) -> str:
    """Make `member` a member of `owner`'s team; return member's token acting for that team."""
    team_id = (await api.get("/api/auth/me", headers=owner.headers)).json()["team_id"]
    user_id = (await api.get("/api/auth/me", headers=member.headers)).json()["id"]
    db = Database(settings.resolved_database_url)
    try:
        async with db.transaction() as session:
            session.add(Membership(user_id=user_id, team_id=team_id, role="member"))
    finally:
        await db.aclose()
    switched = await api.post(
        "/api/auth/switch-team", json={"team_id": team_id}, headers=member.headers
    )
    assert switched.status_code == 200, switched.text
    return str(switched.json()["access_token"])


async def test_crud_and_paging(api: httpx.AsyncClient) -> None:
    alice = await sign_up(api, "alice")
    ids = [await create(api, alice, f"app {i}") for i in range(5)]
    page = (await api.get("/api/conversations?limit=2", headers=alice.headers)).json()
    assert [c["id"] for c in page["items"]] == ids[::-1][:2]
    assert page["next_offset"] == 2
    rest = (await api.get("/api/conversations?limit=10&offset=2", headers=alice.headers)).json()
    assert [c["id"] for c in rest["items"]] == ids[::-1][2:]
    assert rest["next_offset"] is None

    renamed = await api.patch(
        f"/api/conversations/{ids[0]}", json={"title": "Loan calculator"}, headers=alice.headers
    )
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Loan calculator"
    shared = await api.patch(
        f"/api/conversations/{ids[0]}", json={"shared": True}, headers=alice.headers
    )
    assert shared.json()["shared"] is True
    got = (await api.get(f"/api/conversations/{ids[0]}", headers=alice.headers)).json()
    assert got["title"] == "Loan calculator"
    assert got["messages"] == []
    assert got["owned"] is True
    assert (
        await api.delete(f"/api/conversations/{ids[0]}", headers=alice.headers)
    ).status_code == 204
    gone = await api.get(f"/api/conversations/{ids[0]}", headers=alice.headers)
    assert gone.status_code == 404


async def test_another_tenant_gets_404_everywhere(api: httpx.AsyncClient) -> None:
    alice = await sign_up(api, "alice")
    mallory = await sign_up(api, "mallory")
    private = await create(api, alice, "private")
    shared = await create(api, alice, "shared in alice's team")
    await api.patch(f"/api/conversations/{shared}", json={"shared": True}, headers=alice.headers)
    listing = (await api.get("/api/conversations", headers=mallory.headers)).json()
    assert listing["items"] == []
    for target in (private, shared, "0" * 32, "' OR 1=1 --"):
        url = f"/api/conversations/{target}"
        assert (await api.get(url, headers=mallory.headers)).status_code == 404
        patched = await api.patch(url, json={"title": "pwned"}, headers=mallory.headers)
        assert patched.status_code == 404
        share = await api.patch(url, json={"shared": False}, headers=mallory.headers)
        assert share.status_code == 404
        assert (await api.delete(url, headers=mallory.headers)).status_code == 404
    # Nothing changed for alice.
    mine = (await api.get("/api/conversations", headers=alice.headers)).json()["items"]
    assert {(c["title"], c["shared"]) for c in mine} == {
        ("private", False),
        ("shared in alice's team", True),
    }


async def test_team_members_see_shared_conversations_only(
    api: httpx.AsyncClient, db_settings: Settings
) -> None:
    alice = await sign_up(api, "alice")
    bob = await sign_up(api, "bob")
    private = await create(api, alice, "private")
    shared = await create(api, alice, "shared")
    await api.patch(f"/api/conversations/{shared}", json={"shared": True}, headers=alice.headers)
    bob_token = await join_team(db_settings, api, bob, alice)
    listing = (await api.get("/api/conversations", headers=bearer(bob_token))).json()
    assert [c["id"] for c in listing["items"]] == [shared]
    seen = await api.get(f"/api/conversations/{shared}", headers=bearer(bob_token))
    assert seen.status_code == 200
    assert seen.json()["owned"] is False
    assert (
        await api.get(f"/api/conversations/{private}", headers=bearer(bob_token))
    ).status_code == 404
    # Members read shared work; only the owner changes or deletes it.
    for method in ("PATCH", "DELETE"):
        response = await api.request(
            method,
            f"/api/conversations/{shared}",
            json={"title": "mine now"} if method == "PATCH" else None,
            headers=bearer(bob_token),
        )
        assert response.status_code == 404, method
    # Unshared, it disappears for the team.
    await api.patch(f"/api/conversations/{shared}", json={"shared": False}, headers=alice.headers)
    listing = (await api.get("/api/conversations", headers=bearer(bob_token))).json()
    assert listing["items"] == []
