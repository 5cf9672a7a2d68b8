"""Sign-up, sign-in, refresh rotation, sign-out, guests, team switching, forged tokens."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from fragments.auth.tokens import AccessClaims, issue_access_token
from fragments.config import DEFAULT_SECRET_KEY, Settings
from tests.accounts import bearer, sign_up
from tests.modes import anonymous

pytestmark = pytest.mark.anyio


async def test_signup_login_me(api: httpx.AsyncClient) -> None:
    account = await sign_up(api, "alice")
    me = await api.get("/api/auth/me", headers=account.headers)
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["email"] == account.email
    assert body["guest"] is False
    assert [t["role"] for t in body["teams"]] == ["owner"]
    assert body["team_id"] == body["teams"][0]["id"]

    login = await api.post(
        "/api/auth/login", json={"email": account.email.upper(), "password": account.password}
    )
    assert login.status_code == 200
    assert set(login.json()) == {"access_token", "refresh_token", "token_type"}


async def test_bad_credentials_and_duplicates(api: httpx.AsyncClient) -> None:
    account = await sign_up(api)
    wrong = await api.post("/api/auth/login", json={"email": account.email, "password": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_credentials"
    nobody = await api.post(
        "/api/auth/login", json={"email": "ghost@example.com", "password": "whatever1"}
    )
    assert nobody.status_code == 401
    again = await api.post(
        "/api/auth/signup", json={"email": account.email, "password": "another password"}
    )
    assert again.status_code == 409
    weak = await api.post("/api/auth/signup", json={"email": "w@example.com", "password": "short"})
    assert weak.status_code == 400
    bad = await api.post("/api/auth/signup", json={"email": "not-an-email", "password": "x" * 10})
    assert bad.status_code == 400


async def test_refresh_rotates(api: httpx.AsyncClient) -> None:
    account = await sign_up(api)
    first = await api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert first.status_code == 200
    new = first.json()
    assert new["refresh_token"] != account.refresh_token
    # The old refresh token is spent.
    replay = await api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert replay.status_code == 401
    me = await api.get("/api/auth/me", headers=bearer(new["access_token"]))
    assert me.status_code == 200


async def test_logout_revokes_access_and_refresh(api: httpx.AsyncClient) -> None:
    account = await sign_up(api)
    out = await api.post(
        "/api/auth/logout", headers=account.headers, json={"refresh_token": account.refresh_token}
    )
    assert out.status_code == 204
    assert (await api.get("/api/auth/me", headers=account.headers)).status_code == 401
    refreshed = await api.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert refreshed.status_code == 401


def _forge(settings: Settings, payload: dict[str, object], key: str | None = None) -> str:
    return jwt.encode(payload, key or settings.secret_key.get_secret_value(), algorithm="HS256")


async def test_forged_tokens_are_rejected(api: httpx.AsyncClient, db_settings: Settings) -> None:
    account = await sign_up(api)
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    now = int(time.time())

    header, payload, _sig = account.access_token.split(".")
    import base64
    import json

    def b64(obj: dict[str, object]) -> str:
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    other = await sign_up(api, "victim")
    victim = jwt.decode(other.access_token, options={"verify_signature": False})
    forged = {
        "alg none": b64({"alg": "none", "typ": "JWT"}) + "." + payload + ".",
        "wrong key": _forge(db_settings, claims, key="another-secret-key-of-decent-length!"),
        "expired": _forge(db_settings, {**claims, "iat": now - 7200, "exp": now - 3600}),
        "tampered sub": header + "." + b64({**claims, "sub": victim["sub"]}) + "." + _sig,
        "tampered team": header + "." + b64({**claims, "team": victim["team"]}) + "." + _sig,
        "not a jwt": "garbage",
        "refresh token as access": account.refresh_token,
        "missing claims": _forge(db_settings, {"sub": claims["sub"], "exp": now + 60}),
        "unknown session": _forge(db_settings, {**claims, "sid": "0" * 32}),
    }
    for name, token in forged.items():
        response = await api.get("/api/auth/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.json()["error"] in ("invalid_token", "token_expired"), name
        listing = await api.get("/api/conversations", headers=bearer(token))
        assert listing.status_code == 401, name


async def test_a_deleted_users_token_is_rejected(
    api: httpx.AsyncClient, db_settings: Settings
) -> None:
    from fragments.store.db import Database
    from fragments.store.models import User

    account = await sign_up(api)
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    db = Database(db_settings.resolved_database_url)
    try:
        async with db.transaction() as session:
            user = await session.get(User, claims["sub"])
            assert user is not None
            await session.delete(user)
    finally:
        await db.aclose()
    assert (await api.get("/api/auth/me", headers=account.headers)).status_code == 401
    # A fresh, validly signed token for the deleted user is refused too.
    token = issue_access_token(
        AccessClaims(claims["sub"], claims["team"], claims["sid"], False),
        db_settings.secret_key.get_secret_value(),
        5,
    )
    assert (await api.get("/api/auth/me", headers=bearer(token))).status_code == 401


@pytest.mark.auth_modes("guests")  # about guests, who do not exist with guests off
async def test_guest_work_is_claimed_on_signup(api: httpx.AsyncClient) -> None:
    guest = (await api.post("/api/auth/guest")).json()
    made = await api.post(
        "/api/conversations", json={"title": "guest work"}, headers=bearer(guest["access_token"])
    )
    assert made.status_code == 201
    me = (await api.get("/api/auth/me", headers=bearer(guest["access_token"]))).json()
    assert me["guest"] is True
    account = await sign_up(api, "claimer", guest_token=guest["access_token"])
    listing = (await api.get("/api/conversations", headers=account.headers)).json()
    assert [c["title"] for c in listing["items"]] == ["guest work"]
    # The guest token no longer acts for the account.
    assert (await api.get("/api/auth/me", headers=bearer(guest["access_token"]))).status_code == 401


async def test_anonymous_callers(api: httpx.AsyncClient, db_settings: Settings) -> None:
    assert (await api.get("/api/conversations", headers=anonymous())).status_code == 401
    assert (await api.get("/api/auth/me", headers=anonymous())).status_code == 401
    guest = await api.post("/api/auth/guest", headers=anonymous())
    if db_settings.guests_allowed:
        assert guest.status_code == 201
    else:
        assert guest.status_code == 403
        assert guest.json()["error"] == "no_guests"


async def test_switch_team(api: httpx.AsyncClient, db_settings: Settings) -> None:
    from fragments.store.db import Database
    from fragments.store.models import Membership, Team

    alice = await sign_up(api, "alice")
    bob = await sign_up(api, "bob")
    bob_me = (await api.get("/api/auth/me", headers=bob.headers)).json()
    bob_team = bob_me["team_id"]
    refused = await api.post(
        "/api/auth/switch-team", json={"team_id": bob_team}, headers=alice.headers
    )
    assert refused.status_code == 403
    alice_id = (await api.get("/api/auth/me", headers=alice.headers)).json()["id"]
    db = Database(db_settings.resolved_database_url)
    try:
        async with db.transaction() as session:
            team = await session.get(Team, bob_team)
            assert team is not None
            session.add(Membership(user_id=alice_id, team_id=bob_team, role="member"))
    finally:
        await db.aclose()
    switched = await api.post(
        "/api/auth/switch-team", json={"team_id": bob_team}, headers=alice.headers
    )
    assert switched.status_code == 200, switched.text
    token = switched.json()["access_token"]
    me = (await api.get("/api/auth/me", headers=bearer(token))).json()
    assert me["team_id"] == bob_team
    assert {t["role"] for t in me["teams"]} == {"owner", "member"}
    # The old session ended with the switch.
    assert (await api.get("/api/auth/me", headers=alice.headers)).status_code == 401


async def test_api_tokens(api: httpx.AsyncClient) -> None:
    account = await sign_up(api)
    made = await api.post("/api/auth/tokens", json={"name": "ci"}, headers=account.headers)
    assert made.status_code == 201
    token = made.json()["token"]
    assert token.startswith("fra_")
    assert (await api.get("/api/auth/me", headers=bearer(token))).status_code == 200
    gone = await api.delete(f"/api/auth/tokens/{made.json()['id']}", headers=account.headers)
    assert gone.status_code == 204
    assert (await api.get("/api/auth/me", headers=bearer(token))).status_code == 401
    assert (await api.get("/api/auth/me", headers=bearer("fra_guessed"))).status_code == 401


def test_production_refuses_the_default_secret(data_dir: object) -> None:
    from fragments.app import create_app

    with pytest.raises(RuntimeError, match="FRAGMENTS_SECRET_KEY"):
        create_app(Settings(_env_file=None, env="production"))  # type: ignore[call-arg]
    assert Settings(_env_file=None, env="production").guests_allowed is False  # type: ignore[call-arg]
    assert Settings(_env_file=None).guests_allowed is True  # type: ignore[call-arg]
    ok = Settings(_env_file=None, env="production", secret_key="x" * 40)  # type: ignore[call-arg]
    ok.check_production()
    assert DEFAULT_SECRET_KEY not in ok.secret_key.get_secret_value()


async def test_guests_disabled(db_settings: Settings) -> None:
    from fragments.app import create_app

    settings = db_settings.model_copy(update={"allow_guests": False})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post("/api/auth/guest")).status_code == 403
            chat = await client.post("/api/chat", json={})
            assert chat.status_code == 401
            assert (await client.post("/api/sandbox", json={})).status_code == 401
