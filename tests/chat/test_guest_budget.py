"""Guests' chats are counted by client IP whatever token they hold: the IP's daily guest limit
covers anonymous requests and every guest token alike, and the IP has its own monthly token
budget (FRAGMENTS_TOKEN_BUDGET_GUEST) that a new token does not reset. Accounts from the same
address keep their own limits. In memory and in Redis (where a restart forgets nothing)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fragments.config import Settings
from tests.accounts import bearer, sign_up
from tests.chat.conftest import app_client, chat_body
from tests.chat.test_rate_limits import _wait_redis, private_redis
from tests.fakes import FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
def redis_port(request: pytest.FixtureRequest) -> Iterator[int | None]:
    if request.param == "memory":
        yield None
        return
    with private_redis() as (port, _proc):
        yield port


async def _settings(chat_settings: Settings, port: int | None, **extra: object) -> Settings:
    if port is not None:
        await _wait_redis(port)
    return chat_settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{port}/0" if port is not None else None,
            "response_cache": False,
            "allow_guests": True,
            "rate_limit_free_per_day": 50,
            **extra,
        }
    )


async def send(
    client: httpx.AsyncClient, token: str | None = None, **extra: object
) -> httpx.Response:
    headers = bearer(token) if token else {}
    return await client.post("/api/chat", json=chat_body(**extra), headers=headers)


async def _guest(client: httpx.AsyncClient) -> str:
    minted = await client.post("/api/auth/guest")
    assert minted.status_code == 201, minted.text
    return str(minted.json()["access_token"])


async def test_guest_tokens_share_their_ips_daily_chats(
    chat_settings: Settings, fake_openai: FakeOpenAI, redis_port: int | None
) -> None:
    fake_openai.default = FragmentReply()
    settings = await _settings(chat_settings, redis_port, rate_limit_guest_per_day=3)
    async with app_client(settings) as client:
        seen = []
        response = await send(client)  # anonymous
        assert response.status_code == 200, response.text
        seen.append(response.headers["x-ratelimit-remaining"])
        for _ in range(2):
            response = await send(client, await _guest(client))
            assert response.status_code == 200, response.text
            assert response.headers["x-ratelimit-limit"] == "3"
            seen.append(response.headers["x-ratelimit-remaining"])
        assert seen == ["2", "1", "0"]
        # A brand-new guest token is not a fresh quota.
        over = await send(client, await _guest(client))
        assert over.status_code == 429
        assert over.json()["error"] == "rate_limited"
        assert "Guests can make 3 chat requests a day" in over.json()["detail"]
        assert int(over.headers["retry-after"]) > 0
        # An account from the same address has its own plan's limit.
        alice = await sign_up(client, "alice")
        mine = await send(client, alice.access_token)
        assert mine.status_code == 200
        assert mine.headers["x-ratelimit-limit"] == "50"


async def test_guests_have_a_monthly_token_budget_per_ip(
    chat_settings: Settings, fake_openai: FakeOpenAI, redis_port: int | None
) -> None:
    settings = await _settings(chat_settings, redis_port, token_budget_guest=1000)
    async with app_client(settings) as client:
        # A guest token's answer counts against its IP's guest budget.
        fake_openai.script(FragmentReply(input_tokens=900, output_tokens=200))
        assert (await send(client, await _guest(client))).status_code == 200
        fake_openai.default = FragmentReply(input_tokens=10, output_tokens=10)
        # Anonymous, another token: the same IP, the same spent budget.
        for token in (None, await _guest(client)):
            over = await send(client, token)
            assert over.status_code == 429
            body = over.json()
            assert body["error"] == "quota_exceeded"
            assert "1,100 of their 1,000 tokens this month" in body["detail"]
            assert int(over.headers["retry-after"]) > 0
        # Their own key is not the platform's budget; an account is not a guest.
        assert (await send(client, config={"apiKey": "user-key"})).status_code == 200
        alice = await sign_up(client, "alice")
        assert (await send(client, alice.access_token)).status_code == 200
    if redis_port is not None:
        # A restarted app (or another instance) sharing Redis still knows the month's sum.
        async with app_client(settings) as client:
            assert (await send(client)).status_code == 429
    fake_openai.default = None


async def test_anonymous_guests_answers_are_counted_too(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    settings = await _settings(chat_settings, None, token_budget_guest=500)
    async with app_client(settings) as client:
        fake_openai.script(FragmentReply(input_tokens=400, output_tokens=100))
        assert (await send(client)).status_code == 200
        over = await send(client, await _guest(client))
        assert over.status_code == 429
        assert "500 of their 500 tokens" in over.json()["detail"]
