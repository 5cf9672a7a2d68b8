"""Model routing: edits of an existing fragment go to the cheaper model of the same provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fragments.chat.routing import route_model
from fragments.config import Settings
from fragments.llm.catalogue import load_catalogue, resolve_model
from fragments.llm.pricing import cost_usd
from fragments.llm.types import Usage
from fragments.schemas import ChatRequest, ModelRef
from tests.accounts import sign_up
from tests.chat.conftest import app_client, chat_body, names, parse_sse, post_chat
from tests.conftest import Backend, database_settings
from tests.databases import PgDatabase
from tests.fakes import SAMPLE_FRAGMENT, FakeAnthropic, FakeGemini, FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio


def edit_body(model: str, provider: str, **extra: Any) -> dict[str, Any]:
    """A second turn: the history holds the fragment the first answer made."""
    body = chat_body("Make the button blue", model=model, provider=provider, **extra)
    body["messages"] = [
        {"role": "user", "content": [{"type": "text", "text": "Make a loan calculator"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Here."}],
            "object": SAMPLE_FRAGMENT,
        },
        *body["messages"],
    ]
    return body


@pytest.fixture
async def routed(chat_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(chat_settings.model_copy(update={"routing": True})) as c:
        yield c


async def test_an_edit_goes_to_the_cheaper_model(
    routed: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(FragmentReply(input_tokens=4000))
    _, events = await post_chat(routed, edit_body("claude-sonnet-5-5", "anthropic"))

    assert names(events)[-1] == "done"
    assert fake_anthropic.last_request.json["model"] == "claude-haiku-4-5"
    assert events[0].data == {
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "fallback": False,
    }
    # Priced at the model that answered.
    usage = events[-2].data
    answered = Usage(
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        cache_read_tokens=usage["cache_read_tokens"],
        cache_write_tokens=usage["cache_write_tokens"],
    )
    assert usage["cost_usd"] == cost_usd("claude-haiku-4-5", answered)
    assert usage["cost_usd"] < cost_usd("claude-sonnet-5-5", answered)


async def test_edits_route_on_each_protocol(
    routed: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_gemini: FakeGemini
) -> None:
    fake_openai.script(FragmentReply())
    _, events = await post_chat(routed, edit_body("gpt-4.1", "openai"))
    assert fake_openai.last_request.json["model"] == "gpt-4.1-mini"
    assert events[0].data["model"] == "gpt-4.1-mini"

    fake_gemini.script(FragmentReply())
    _, events = await post_chat(routed, edit_body("gemini-2.5-pro", "google"))
    assert fake_gemini.last_request.path.startswith("/v1beta/models/gemini-2.5-flash:")
    assert events[0].data["model"] == "gemini-2.5-flash"


async def test_a_new_app_stays_on_the_chosen_model(
    routed: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(FragmentReply())
    _, events = await post_chat(routed, chat_body(model="claude-sonnet-5-5", provider="anthropic"))
    assert fake_anthropic.last_request.json["model"] == "claude-sonnet-5-5"
    assert events[0].data["model"] == "claude-sonnet-5-5"


async def test_routing_off_pins_the_model(
    routed: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply())
    _, events = await post_chat(routed, edit_body("gpt-4.1", "openai", config={"routing": "off"}))
    assert fake_openai.last_request.json["model"] == "gpt-4.1"
    assert events[0].data["model"] == "gpt-4.1"


async def test_routing_is_off_by_default(
    client: httpx.AsyncClient, chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    assert chat_settings.routing is False
    fake_openai.script(FragmentReply())
    # Asking for "auto" does not turn it on when the operator has not.
    _, events = await post_chat(client, edit_body("gpt-4.1", "openai", config={"routing": "auto"}))
    assert fake_openai.last_request.json["model"] == "gpt-4.1"
    assert events[0].data["model"] == "gpt-4.1"


async def test_a_users_own_server_is_never_routed(
    routed: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply())
    config = {"baseURL": fake_openai.base_url, "apiKey": "user-key"}
    _, events = await post_chat(routed, edit_body("gpt-4.1", "openai", config=config))
    assert fake_openai.last_request.json["model"] == "gpt-4.1"
    assert events[0].data["model"] == "gpt-4.1"


def test_the_default_map_stays_within_the_catalogue_and_provider() -> None:
    catalogue = {m.id: m for m in load_catalogue()}
    for source, target in Settings(_env_file=None).routing_map.items():  # type: ignore[call-arg]
        assert source in catalogue, source
        assert target in catalogue, target
        assert catalogue[source].provider_id == catalogue[target].provider_id
        assert catalogue[target].multimodal or not catalogue[source].multimodal


def test_a_map_entry_to_another_provider_is_ignored() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, routing=True, routing_map={"gpt-4.1": "claude-haiku-4-5"}
    )
    request = ChatRequest.model_validate(edit_body("gpt-4.1", "openai"))
    model = resolve_model(ModelRef(id="gpt-4.1", providerId="openai"), has_base_url=False)
    assert route_model(settings, request, model) == (model, False)


@pytest.fixture
async def routed_db(
    chat_settings: Settings, backend: Backend, pg_database: PgDatabase | None
) -> AsyncIterator[httpx.AsyncClient]:
    """Routing on, conversations stored on SQLite or PostgreSQL (row-level security on)."""
    update = {"routing": True, **database_settings(backend, pg_database)}
    async with app_client(chat_settings.model_copy(update=update)) as c:
        yield c


def done_data(events: list[Any]) -> dict[str, Any]:
    data: dict[str, Any] = events[-1].data
    return data


async def test_a_stored_conversation_with_a_fragment_routes_its_edits(
    routed_db: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    """The client sends only `conversation_id` and the new message: the stored conversation
    already has a fragment, so this turn is an edit and goes to the cheaper model."""
    alice = await sign_up(routed_db, "alice")
    fake_anthropic.script(FragmentReply(), FragmentReply())
    first = chat_body("Make a loan calculator", model="claude-sonnet-5-5", provider="anthropic")
    response = await routed_db.post("/api/chat", json=first, headers=alice.headers)
    events = parse_sse(response.text)
    assert names(events)[-1] == "done"
    # A new app stays on the chosen model.
    assert fake_anthropic.last_request.json["model"] == "claude-sonnet-5-5"
    conversation_id = done_data(events)["conversation_id"]

    second = chat_body("Make the button blue", model="claude-sonnet-5-5", provider="anthropic")
    second["conversation_id"] = conversation_id
    response = await routed_db.post("/api/chat", json=second, headers=alice.headers)
    events = parse_sse(response.text)
    assert names(events)[-1] == "done"
    sent = fake_anthropic.last_request
    assert sent.json["model"] == "claude-haiku-4-5"
    provider = {"provider": "anthropic", "model": "claude-haiku-4-5", "fallback": False}
    assert events[0].data == provider
    # The edit was answered with the stored fragment's code, sent once.
    texts = [b["text"] for m in sent.json["messages"] for b in m["content"] if "text" in b]
    assert "\n".join(texts).count(SAMPLE_FRAGMENT["code"]) == 1


async def test_another_users_conversation_is_refused_before_any_model(
    routed_db: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    alice = await sign_up(routed_db, "alice")
    fake_anthropic.script(FragmentReply())
    body = chat_body("Make a loan calculator", model="claude-sonnet-5-5", provider="anthropic")
    response = await routed_db.post("/api/chat", json=body, headers=alice.headers)
    conversation_id = done_data(parse_sse(response.text))["conversation_id"]
    # Another user's conversation id: a 404 before any model is asked (nothing to route on).
    bob = await sign_up(routed_db, "bob")
    body["conversation_id"] = conversation_id
    response = await routed_db.post("/api/chat", json=body, headers=bob.headers)
    assert response.status_code == 404
    assert len(fake_anthropic.requests) == 1
