"""Teams and roles: owners manage the team, admins members, members use; the plan (tier, limits)
is the operator's; outsiders get 404; a team keeps an owner; switching into a team shows its
shared work."""

from __future__ import annotations

import httpx
import pytest

from tests.accounts import bearer, sign_up

pytestmark = pytest.mark.anyio


async def test_roles(api: httpx.AsyncClient) -> None:
    owner = await sign_up(api, "owner")
    admin = await sign_up(api, "admin")
    member = await sign_up(api, "member")
    outsider = await sign_up(api, "outsider")
    team = (await api.post("/api/teams", json={"name": "Acme"}, headers=owner.headers)).json()
    tid = team["id"]
    assert team["role"] == "owner"

    for account, role in ((admin, "admin"), (member, "member")):
        added = await api.post(
            f"/api/teams/{tid}/members",
            json={"email": account.email, "role": role},
            headers=owner.headers,
        )
        assert added.status_code == 201, added.text
    members = (await api.get(f"/api/teams/{tid}/members", headers=member.headers)).json()
    assert [m["role"] for m in members] == ["owner", "admin", "member"]

    # Outsiders see nothing and change nothing.
    for method, url, body in (
        ("GET", f"/api/teams/{tid}/members", None),
        ("PATCH", f"/api/teams/{tid}", {"tier": "enterprise"}),
        ("POST", f"/api/teams/{tid}/members", {"email": outsider.email}),
    ):
        response = await api.request(method, url, json=body, headers=outsider.headers)
        assert response.status_code == 404, (method, url)

    # Members use; admins manage members; only owners make owners or rename the team.
    refused = await api.post(
        f"/api/teams/{tid}/members", json={"email": outsider.email}, headers=member.headers
    )
    assert refused.status_code == 403
    # The plan and limits are the operator's (`fragments teams set-tier`), for every role.
    for who, body in ((admin, {"limits": {"chat_per_day": 5}}), (owner, {"tier": "pro"})):
        refused_plan = await api.patch(f"/api/teams/{tid}", json=body, headers=who.headers)
        assert refused_plan.status_code == 403
        assert refused_plan.json()["error"] == "operator_only"
    renamed = await api.patch(f"/api/teams/{tid}", json={"name": "Acme 2"}, headers=admin.headers)
    assert renamed.status_code == 403
    renamed = await api.patch(f"/api/teams/{tid}", json={"name": "Acme 2"}, headers=owner.headers)
    assert renamed.json()["name"] == "Acme 2"
    make_owner = await api.post(
        f"/api/teams/{tid}/members",
        json={"email": outsider.email, "role": "owner"},
        headers=admin.headers,
    )
    assert make_owner.status_code == 403

    owner_id = members[0]["user_id"]
    member_id = members[2]["user_id"]
    demote = await api.patch(
        f"/api/teams/{tid}/members/{owner_id}", json={"role": "member"}, headers=owner.headers
    )
    assert demote.status_code == 400  # the last owner stays
    removed = await api.delete(f"/api/teams/{tid}/members/{owner_id}", headers=admin.headers)
    assert removed.status_code == 403
    member_switch = await api.post(
        "/api/auth/switch-team", json={"team_id": tid}, headers=member.headers
    )
    member_in_team = member_switch.json()
    assert (
        await api.delete(f"/api/teams/{tid}/members/{member_id}", headers=admin.headers)
    ).status_code == 204
    # A token acting for a team one was removed from stops working at once; refreshing it
    # falls back to the personal team.
    gone = await api.get("/api/auth/me", headers=bearer(member_in_team["access_token"]))
    assert gone.status_code == 401
    back = await api.post(
        "/api/auth/refresh", json={"refresh_token": member_in_team["refresh_token"]}
    )
    assert back.status_code == 200
    me = (await api.get("/api/auth/me", headers=bearer(back.json()["access_token"]))).json()
    assert me["team_id"] != tid

    # The admin switches into the team: the owner's shared conversation is visible there.
    switched = await api.post("/api/auth/switch-team", json={"team_id": tid}, headers=owner.headers)
    owner_in_team = bearer(switched.json()["access_token"])
    made = await api.post("/api/conversations", json={"title": "team app"}, headers=owner_in_team)
    await api.patch(
        f"/api/conversations/{made.json()['id']}", json={"shared": True}, headers=owner_in_team
    )
    admin_switch = await api.post(
        "/api/auth/switch-team", json={"team_id": tid}, headers=admin.headers
    )
    admin_in_team = bearer(admin_switch.json()["access_token"])
    listing = (await api.get("/api/conversations", headers=admin_in_team)).json()
    assert [c["title"] for c in listing["items"]] == ["team app"]
    # The removed member cannot switch in any more.
    again = await api.post(
        "/api/auth/switch-team",
        json={"team_id": tid},
        headers=bearer(back.json()["access_token"]),
    )
    assert again.status_code == 403
