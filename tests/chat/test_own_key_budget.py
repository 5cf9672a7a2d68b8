"""Usage paid with the caller's own key (brought in the request, saved with PUT /api/keys, or an
own server) is reported but not charged to the team's monthly token budget; the platform's key
is. Asserted at the wire: the budget endpoint, /api/usage, and the 429 over the budget. On SQLite
and PostgreSQL (row-level security on)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fragments.config import Settings
from tests.accounts import Account, sign_up
from tests.chat.conftest import app_client, chat_body, names, parse_sse, received_key
from tests.conftest import Backend, database_settings
from tests.databases import PgDatabase
from tests.fakes import FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio

BUDGET = 2000


@pytest.fixture
async def client(
    chat_settings: Settings, backend: Backend, pg_database: PgDatabase | None
) -> AsyncIterator[httpx.AsyncClient]:
    settings = chat_settings.model_copy(
        update={
            **database_settings(backend, pg_database),
            "token_budget_free": BUDGET,
            # Every answer here must reach the provider (a cache hit would cost nothing).
            "response_cache": False,
        }
    )
    async with app_client(settings) as c:
        yield c


async def team_of(client: httpx.AsyncClient, who: Account) -> str:
    me = await client.get("/api/auth/me", headers=who.headers)
    team_id: str = me.json()["team_id"]
    return team_id


async def budget(client: httpx.AsyncClient, who: Account) -> dict[str, Any]:
    seen = await client.get(f"/api/teams/{await team_of(client, who)}/budget", headers=who.headers)
    assert seen.status_code == 200, seen.text
    body: dict[str, Any] = seen.json()
    return body


async def chat(client: httpx.AsyncClient, who: Account, text: str, **config: Any) -> httpx.Response:
    body = chat_body(text, config=config) if config else chat_body(text)
    return await client.post("/api/chat", json=body, headers=who.headers)


def answered(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert names(parse_sse(response.text))[-1] == "done", response.text


async def test_own_key_usage_is_shown_but_not_charged(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    alice = await sign_up(client, "alice")
    fake_openai.script(
        FragmentReply(input_tokens=300, output_tokens=100),  # platform key
        FragmentReply(input_tokens=900, output_tokens=100),  # key in the request
        FragmentReply(input_tokens=400, output_tokens=100),  # own server
        FragmentReply(input_tokens=700, output_tokens=100),  # saved key
    )
    answered(await chat(client, alice, "Make a counter"))
    assert fake_openai.last_request is not None
    assert received_key(fake_openai.last_request) != "alices-key"
    after_platform = await budget(client, alice)
    assert after_platform["used_tokens"] == 400
    assert after_platform["remaining_tokens"] == BUDGET - 400

    answered(await chat(client, alice, "Make a timer", apiKey="alices-key"))
    assert received_key(fake_openai.last_request) == "alices-key"
    answered(await chat(client, alice, "Make a clock", baseURL=fake_openai.base_url, apiKey="x"))
    saved = await client.put(
        "/api/keys/openai", json={"api_key": "alices-saved-key"}, headers=alice.headers
    )
    assert saved.status_code in (200, 201, 204), saved.text
    answered(await chat(client, alice, "Make a stopwatch"))
    assert received_key(fake_openai.last_request) == "alices-saved-key"

    seen = await budget(client, alice)
    assert seen["used_tokens"] == 400  # only the platform's answer
    assert seen["remaining_tokens"] == BUDGET - 400
    assert seen["own_key_tokens"] == 1000 + 500 + 800
    assert seen["cost_usd"] == pytest.approx(after_platform["cost_usd"])

    report = (await client.get("/api/usage", headers=alice.headers)).json()
    month = report["month"]
    # Every figure still counts all usage; `own_key` is the part the budget does not charge.
    assert month["requests"] == 4
    assert month["input_tokens"] == 300 + 900 + 400 + 700
    assert month["own_key"]["requests"] == 3
    assert month["own_key"]["input_tokens"] == 900 + 400 + 700
    assert month["own_key"]["output_tokens"] == 300
    assert report["total"]["own_key"]["requests"] == 3
    (item,) = report["items"]
    assert item["own_key"]["input_tokens"] == 2000


async def test_the_budget_refuses_platform_answers_only(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    bob = await sign_up(client, "bob")
    fake_openai.script(
        FragmentReply(input_tokens=900, output_tokens=100),  # platform: 1000 of 2000
        FragmentReply(input_tokens=4900, output_tokens=100),  # own key: not charged
        FragmentReply(input_tokens=900, output_tokens=100),  # platform: 2000 of 2000
        FragmentReply(input_tokens=100, output_tokens=100),  # own key, over the budget
        FragmentReply(input_tokens=100, output_tokens=100),  # saved key, over the budget
    )
    answered(await chat(client, bob, "Make a counter"))
    answered(await chat(client, bob, "Make a timer", apiKey="bobs-key"))
    # Kept per instance (the brief cache of the month's sum): the own-key answer is not in it.
    answered(await chat(client, bob, "Make a clock"))

    over = await chat(client, bob, "Make a stopwatch")
    assert over.status_code == 429, over.text
    assert over.json()["error"] == "quota_exceeded"
    assert "2,000 of its 2,000" in over.json()["detail"]
    # The caller's own key still works: it is not the platform's money.
    answered(await chat(client, bob, "Make a stopwatch", apiKey="bobs-key"))
    # So does a key the caller saved, used for a request that brings none.
    saved = await client.put(
        "/api/keys/openai", json={"api_key": "bobs-saved-key"}, headers=bob.headers
    )
    assert saved.status_code in (200, 201, 204), saved.text
    with_saved = await chat(client, bob, "Make an alarm")
    answered(with_saved)
    assert received_key(fake_openai.last_request) == "bobs-saved-key"
    # It counts against the own-key abuse limit, not the plan's daily requests.
    assert with_saved.headers["X-RateLimit-Limit"] == "500"
    seen = await budget(client, bob)
    assert (seen["used_tokens"], seen["remaining_tokens"]) == (BUDGET, 0)
    assert seen["own_key_tokens"] == 5000 + 200 + 200
