"""A team's daily chat limit beside each member's own: all members together count against the
team's figure (its tier's, or an enterprise team's `limits.team_chat_per_day`); both must allow
a request, and the 429 says which one is full. A request refused by one limit does not use up
the other. SQLite and PostgreSQL, guests allowed and off, in memory and in Redis."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import update

from fragments.auth import service
from fragments.config import Settings
from fragments.store.models import Team
from tests.accounts import bearer
from tests.apps import app_client as running_app
from tests.apps import client_state
from tests.chat.conftest import PLATFORM_KEYS, app_client, chat_body
from tests.chat.test_rate_limits import _wait_redis, private_redis
from tests.fakes import FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[True, False], ids=["guests", "no-guests"])
def allow_guests(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(params=["memory", "redis"])
def redis_port(request: pytest.FixtureRequest) -> Iterator[int | None]:
    if request.param == "memory":
        yield None
        return
    with private_redis() as (port, _proc):
        yield port


async def _settings(
    db_settings: Settings, fake_openai: FakeOpenAI, allow_guests: bool, port: int | None
) -> Settings:
    if port is not None:
        await _wait_redis(port)
    return db_settings.model_copy(
        update={
            "openai_api_key": SecretStr(PLATFORM_KEYS["openai"]),
            "openai_base_url": fake_openai.base_url,
            "provider_retries": 0,
            "response_cache": False,
            "allow_guests": allow_guests,
            "redis_url": f"redis://127.0.0.1:{port}/0" if port is not None else None,
            "rate_limit_free_per_day": 3,
            "rate_limit_team_free_per_day": 4,
            "rate_limit_team_pro_per_day": 5,
        }
    )


def _email(name: str) -> str:
    # Unique: the PostgreSQL database is shared by the session's tests.
    return f"{name}-{secrets.token_hex(4)}@example.com"


async def _account(client: httpx.AsyncClient, settings: Settings, email: str) -> str:
    """A new account's access token, made through the sign-up service (the HTTP route's own
    behaviour with guests off is tested elsewhere)."""
    db = client_state(client).db
    async with db.transaction() as session:
        pair = await service.signup(session, settings, email, "correct horse battery")
    return pair.access_token


async def _team_of_three(client: httpx.AsyncClient, settings: Settings) -> tuple[str, list[str]]:
    """A shared team (alice owns it, bob and carol are members): its id and their tokens
    acting for it."""
    emails = [_email(name) for name in ("alice", "bob", "carol")]
    tokens = [await _account(client, settings, email) for email in emails]
    made = await client.post("/api/teams", json={"name": "Shop"}, headers=bearer(tokens[0]))
    assert made.status_code == 201, made.text
    team_id = str(made.json()["id"])
    for email in emails[1:]:
        added = await client.post(
            f"/api/teams/{team_id}/members",
            json={"email": email},
            headers=bearer(tokens[0]),
        )
        assert added.status_code == 201, added.text
    acting = []
    for token in tokens:
        switched = await client.post(
            "/api/auth/switch-team", json={"team_id": team_id}, headers=bearer(token)
        )
        assert switched.status_code == 200, switched.text
        acting.append(str(switched.json()["access_token"]))
    return team_id, acting


async def send(client: httpx.AsyncClient, token: str, **extra: object) -> httpx.Response:
    return await client.post("/api/chat", json=chat_body(**extra), headers=bearer(token))


async def test_members_share_their_teams_daily_chats(
    db_settings: Settings, fake_openai: FakeOpenAI, allow_guests: bool, redis_port: int | None
) -> None:
    fake_openai.default = FragmentReply()
    settings = await _settings(db_settings, fake_openai, allow_guests, redis_port)
    async with app_client(settings) as client:
        team_id, (alice, bob, carol) = await _team_of_three(client, settings)
        # Alice uses her own 3 a day; the team (4 a day) has 1 left, which bob takes.
        for _ in range(3):
            assert (await send(client, alice)).status_code == 200
        mine = await send(client, alice)
        assert mine.status_code == 429
        assert mine.json()["detail"].startswith("Your plan can make 3 chat requests a day")
        ok = await send(client, bob)
        assert ok.status_code == 200
        # The tighter of the two limits is the one the headers show.
        assert ok.headers["x-ratelimit-limit"] == "4"
        assert ok.headers["x-ratelimit-remaining"] == "0"
        # Carol has used nothing herself, but the team is full.
        full = await send(client, carol)
        assert full.status_code == 429
        body = full.json()
        assert body["error"] == "rate_limited"
        assert "Your team can make 4 chat requests a day across all its members" in body["detail"]
        assert int(full.headers["retry-after"]) > 0
        # Their own key is not the platform's quota: the team limit does not apply.
        assert (await send(client, carol, config={"apiKey": "user-key"})).status_code == 200
        # A larger plan (the tier's team figure) lets carol in; her refused request did not
        # use up her own limit.
        db = client_state(client).db
        async with db.transaction() as session:
            await session.execute(update(Team).where(Team.id == team_id).values(tier="pro"))
        assert (await send(client, carol)).headers["x-ratelimit-limit"] == "5"
        # An enterprise team's own figure overrides the tier's.
        async with db.transaction() as session:
            await session.execute(
                update(Team)
                .where(Team.id == team_id)
                .values(tier="enterprise", limits={"team_chat_per_day": 1, "chat_per_day": 9})
            )
        # (The limits library counts each figure in its own window: a new figure starts afresh.)
        assert (await send(client, bob)).status_code == 200
        over = await send(client, carol)
        assert over.status_code == 429
        assert "Your team can make 1 chat requests a day" in over.json()["detail"]
    fake_openai.default = None


async def test_a_personal_team_is_limited_by_its_tier(
    db_settings: Settings, fake_openai: FakeOpenAI, allow_guests: bool
) -> None:
    """A one-member team: the tighter of the user's and the team's figures holds."""
    fake_openai.default = FragmentReply()
    settings = await _settings(db_settings, fake_openai, allow_guests, None)
    settings = settings.model_copy(update={"rate_limit_team_free_per_day": 2})
    async with running_app(settings) as client:
        dora = await _account(client, settings, _email("dora"))
        first = await send(client, dora)
        assert first.headers["x-ratelimit-limit"] == "2"
        assert (await send(client, dora)).status_code == 200
        over = await send(client, dora)
        assert over.status_code == 429
        assert "Your team can make 2" in over.json()["detail"]
    fake_openai.default = None
