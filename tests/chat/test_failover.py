"""Failover through /api/chat: the events a client sees, the usage stored per attempt, the
caller's own chain and key rules, bad chains refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fragments.config import Settings
from tests.accounts import sign_up
from tests.chat.conftest import app_client, chat_body, names, parse_sse
from tests.conftest import Backend, database_settings
from tests.databases import PgDatabase
from tests.fakes import SAMPLE_FRAGMENT, ErrorReply, FakeAnthropic, FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio

CHAIN = "openai:gpt-4.1,anthropic:claude-sonnet-5-5"


@pytest.fixture
def failover_settings(
    chat_settings: Settings, backend: Backend, pg_database: PgDatabase | None
) -> Settings:
    """The chat fakes with the chain on, on SQLite and PostgreSQL."""
    return chat_settings.model_copy(
        update={"failover_chain": CHAIN, **database_settings(backend, pg_database)}
    )


@pytest.fixture
async def client(failover_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(failover_settings) as c:
        yield c


async def test_mid_answer_the_client_sees_reset_then_the_fallback_and_both_are_charged(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    alice = await sign_up(client, "alice")
    fake_openai.script(FragmentReply(drop_after=10, chunk_size=40, delay=0.01))
    fake_anthropic.script(FragmentReply(input_tokens=900, output_tokens=700))
    response = await client.post("/api/chat", json=chat_body(), headers=alice.headers)
    assert response.status_code == 200
    events = parse_sse(response.text)
    order = names(events)
    assert order[0] == "provider"
    assert events[0].data == {"provider": "openai", "model": "gpt-4.1", "fallback": False}
    reset = order.index("reset")
    assert "partial" in order[:reset]  # the first model's partial answer had been shown
    assert events[reset].data == {"reason": "connection_lost"}
    assert events[reset + 1].name == "provider"
    assert events[reset + 1].data == {
        "provider": "anthropic",
        "model": "claude-sonnet-5-5",
        "fallback": True,
        "reason": "connection_lost",
        "from": {"provider": "openai", "model": "gpt-4.1"},
    }
    assert order[-3:] == ["fragment", "usage", "done"]
    fragment = events[-3].data
    assert fragment["code"] == SAMPLE_FRAGMENT["code"]
    assert events[-2].data["output_tokens"] == 700
    assert events[-1].data["saved"] is True

    # Usage: the cut attempt estimated against GPT-4.1; the stored turn's row names the model
    # that answered (the 700 tokens Claude reported).
    report = (await client.get("/api/usage", headers=alice.headers)).json()
    by_model = {item["model"]: item for item in report["items"]}
    assert set(by_model) == {"openai/gpt-4.1", "anthropic/claude-sonnet-5-5"}
    assert by_model["openai/gpt-4.1"]["output_tokens"] == 400 // 4
    assert by_model["openai/gpt-4.1"]["cost_usd"] > 0
    assert by_model["anthropic/claude-sonnet-5-5"]["output_tokens"] == 700
    assert by_model["anthropic/claude-sonnet-5-5"]["requests"] == 1


async def test_before_the_first_token_only_the_provider_event_tells(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.script(ErrorReply(529, "Overloaded"))
    fake_anthropic.script(FragmentReply())
    response = await client.post("/api/chat", json=chat_body())
    events = parse_sse(response.text)
    order = names(events)
    assert "reset" not in order
    assert order.count("provider") == 1
    assert events[0].data["provider"] == "anthropic"
    assert events[0].data["fallback"] is True
    assert events[0].data["reason"] == "overloaded"
    assert order[-1] == "done"


async def test_a_requests_own_key_never_reaches_the_platform_chain(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.script(ErrorReply(503, "down"))
    body = chat_body(config={"api_key": "user-key"})
    events = parse_sse((await client.post("/api/chat", json=body)).text)
    assert events[-1].name == "error"
    assert events[-1].data["error"] == "provider_unavailable"
    assert fake_anthropic.requests == []


async def test_a_callers_own_chain_with_their_key(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.script(ErrorReply(500), FragmentReply())
    body = chat_body(
        config={
            "api_key": "user-key",
            "fallback_models": [{"providerId": "openai", "id": "gpt-4.1-mini"}],
        }
    )
    events = parse_sse((await client.post("/api/chat", json=body)).text)
    assert events[0].data["model"] == "gpt-4.1-mini"
    assert events[-1].name == "done"
    assert [r.json["model"] for r in fake_openai.requests] == ["gpt-4.1", "gpt-4.1-mini"]
    assert {r.authorization for r in fake_openai.requests} == {"Bearer user-key"}
    assert fake_anthropic.requests == []


async def test_an_empty_own_chain_turns_failover_off(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.script(ErrorReply(500))
    body = chat_body(config={"fallback_models": []})
    events = parse_sse((await client.post("/api/chat", json=body)).text)
    assert events[-1].data["error"] == "provider_unavailable"
    assert fake_anthropic.requests == []


@pytest.mark.parametrize(
    ("config", "code"),
    [
        # The caller's key would go to another provider.
        (
            {
                "api_key": "k",
                "fallback_models": [{"providerId": "anthropic", "id": "claude-sonnet-5-5"}],
            },
            "invalid_fallback",
        ),
        ({"fallback_models": [{"providerId": "openai", "id": "no-such-model"}]}, "unknown_model"),
        ({"fallback_models": [{"providerId": "nobody", "id": "x"}]}, "unknown_model"),
    ],
)
async def test_a_bad_chain_is_a_clear_400(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, config: dict[str, object], code: str
) -> None:
    response = await client.post("/api/chat", json=chat_body(config=config))
    assert response.status_code == 400
    assert response.json()["error"] == code
    assert isinstance(response.json()["detail"], str)
    assert fake_openai.requests == []


async def test_a_chain_too_long_or_malformed_is_a_422(client: httpx.AsyncClient) -> None:
    five = [{"providerId": "openai", "id": "gpt-4.1"}] * 5
    for bad in (five, "openai:gpt-4.1", [{"providerId": "openai"}]):
        response = await client.post("/api/chat", json=chat_body(config={"fallback_models": bad}))
        assert response.status_code == 422
        assert response.json()["error"]


async def test_when_the_fallback_is_cut_too_each_model_is_charged_its_part(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    alice = await sign_up(client, "alice")
    fake_openai.script(FragmentReply(drop_after=10, chunk_size=40, delay=0.01))
    fake_anthropic.script(FragmentReply(cut_after=5, chunk_size=40, usage=False))
    response = await client.post("/api/chat", json=chat_body(), headers=alice.headers)
    events = parse_sse(response.text)
    assert names(events).count("reset") == 1
    assert events[-1].name == "error"
    assert events[-1].data["error"] == "provider_unavailable"
    report = (await client.get("/api/usage", headers=alice.headers)).json()
    by_model = {item["model"]: item for item in report["items"]}
    assert by_model["openai/gpt-4.1"]["output_tokens"] == 400 // 4
    assert by_model["anthropic/claude-sonnet-5-5"]["output_tokens"] == 200 // 4
