"""Whose key goes where: asserted on what the fake providers received."""

from __future__ import annotations

import httpx
import pytest

from fragments.config import Settings
from tests.chat.conftest import (
    PLATFORM_KEYS,
    app_client,
    chat_body,
    names,
    post_chat,
    received_key,
)
from tests.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FragmentReply, RecordedRequest

pytestmark = pytest.mark.anyio


def assert_no_platform_key(request: RecordedRequest) -> None:
    seen = " ".join(request.headers.values()) + request.raw.decode(errors="replace")
    for key in PLATFORM_KEYS.values():
        assert key not in seen


async def test_camel_case_config_with_a_user_url_and_key(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    """The original client's names; the URL goes to the SDK as given (here with a path)."""
    fake_openai.script(FragmentReply())
    config = {
        "apiKey": "user-key-1",
        "baseURL": f"{fake_openai.url}/custom/v1",
        "maxTokens": 777,
        "topP": 0.5,
        "temperature": 0.25,
        "frequencyPenalty": 0.1,
        "presencePenalty": -0.1,
        "topK": 12,
    }
    _, events = await post_chat(client, chat_body(model="some-model", config=config))

    assert names(events)[-1] == "done"
    sent = fake_openai.last_request
    assert sent.path == "/custom/v1/chat/completions"
    assert received_key(sent) == "user-key-1"
    assert_no_platform_key(sent)
    body = sent.json
    assert body["max_tokens"] == 777
    assert (body["top_p"], body["temperature"], body["top_k"]) == (0.5, 0.25, 12)
    assert (body["frequency_penalty"], body["presence_penalty"]) == (0.1, -0.1)
    assert events[-2].data["cost_usd"] == 0.0  # a user's own server is not priced


async def test_snake_case_config(client: httpx.AsyncClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(FragmentReply())
    config = {"api_key": "user-key-2", "base_url": fake_openai.base_url, "max_tokens": 99}
    await post_chat(client, chat_body(config=config))
    assert received_key(fake_openai.last_request) == "user-key-2"
    assert fake_openai.last_request.json["max_tokens"] == 99


async def test_a_user_url_without_a_key_gets_no_platform_key(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.script(FragmentReply())
    await post_chat(client, chat_body(config={"baseURL": fake_openai.base_url, "apiKey": ""}))
    sent = fake_openai.last_request
    assert received_key(sent) == "no-key"
    assert_no_platform_key(sent)

    # Same for Anthropic's protocol (its base URL has no /v1).
    fake_anthropic.script(FragmentReply())
    body = chat_body(
        model="claude-sonnet-5-5", provider="anthropic", config={"baseURL": fake_anthropic.url}
    )
    _, events = await post_chat(client, body)
    assert names(events)[-1] == "done"
    assert_no_platform_key(fake_anthropic.last_request)


async def test_gemini_user_url_and_key(client: httpx.AsyncClient, fake_gemini: FakeGemini) -> None:
    fake_gemini.script(FragmentReply())
    config = {"baseURL": f"{fake_gemini.url}/v1beta", "apiKey": "user-google-key"}
    _, events = await post_chat(
        client, chat_body(model="gemini-2.5-pro", provider="google", config=config)
    )
    assert names(events)[-1] == "done"
    sent = fake_gemini.last_request
    assert sent.path == "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
    assert received_key(sent) == "user-google-key"
    assert_no_platform_key(sent)


async def test_a_user_key_alone_goes_to_the_platform_url(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply())
    await post_chat(client, chat_body(config={"apiKey": "user-key-3"}))
    sent = fake_openai.last_request
    assert sent.path == "/v1/chat/completions"  # the platform's OPENAI_BASE_URL (the fake)
    assert received_key(sent) == "user-key-3"


async def test_no_key_anywhere(chat_settings: Settings, fake_openai: FakeOpenAI) -> None:
    settings = chat_settings.model_copy(update={"openai_api_key": None})
    async with app_client(settings) as client:
        response, events = await post_chat(client, chat_body())
    assert response.status_code == 200
    assert names(events) == ["error"]
    assert events[0].data == {
        "error": "provider_auth",
        "detail": "No API key for OpenAI: set OPENAI_API_KEY or enter a key in settings.",
    }
    assert fake_openai.requests == []


async def test_no_key_for_an_openai_compatible_provider(client: httpx.AsyncClient) -> None:
    _, events = await post_chat(client, chat_body(model="grok-4", provider="xai"))
    assert events[-1].data["error"] == "provider_auth"
    assert "XAI_API_KEY" in events[-1].data["detail"]
