"""POST /api/chat end to end against each fake protocol, through the real request and wire code."""

from __future__ import annotations

import json

import httpx
import pytest

from fragments.chat.window import code_reference
from fragments.config import Settings
from fragments.sandbox.templates import TEMPLATES
from tests.chat.conftest import PLATFORM_KEYS, chat_body, names, post_chat, received_key
from tests.fakes import SAMPLE_FRAGMENT, FakeAnthropic, FakeGemini, FakeOpenAI, FragmentReply
from tests.modes import a_conversation, saves_turns

pytestmark = pytest.mark.anyio


def assert_success_shape(
    events: list, conversation_id: str | None = None, *, saved: bool = False
) -> None:
    order = names(events)
    assert order[0] == "provider"
    assert order[-3:] == ["fragment", "usage", "done"]
    assert set(order[1:-3]) == {"partial"}, order
    assert order.count("partial") >= 1
    done = events[-1].data
    assert done["saved"] is saved
    assert len(done["fragment_id"]) == 32
    if conversation_id is not None:
        assert done["conversation_id"] == conversation_id
    else:
        assert len(done["conversation_id"]) == 32


def expected_fragment(**changes: object) -> dict[str, object]:
    return {**SAMPLE_FRAGMENT, "files": [], **changes}


async def test_openai_tool_mode(client: httpx.AsyncClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(FragmentReply(chunk_size=24, input_tokens=1234, cache_read_tokens=200))
    conversation = await a_conversation(client, "conv-1")
    response, events = await post_chat(client, chat_body(conversation_id=conversation))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert_success_shape(events, conversation, saved=saves_turns(client))
    assert events[0].data == {"provider": "openai", "model": "gpt-4.1", "fallback": False}
    assert events[-3].data == expected_fragment()
    usage = events[-2].data
    assert usage["input_tokens"] == 1234
    assert usage["cache_read_tokens"] == 200
    assert usage["output_tokens"] == len(json.dumps(SAMPLE_FRAGMENT)) // 4
    assert usage["cache_write_tokens"] == 0
    assert usage["cost_usd"] > 0  # gpt-4.1 has a list price

    sent = fake_openai.last_request
    assert sent.path == "/v1/chat/completions"
    assert received_key(sent) == PLATFORM_KEYS["openai"]
    body = sent.json
    assert body["model"] == "gpt-4.1"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "fragment"}}
    (tool,) = body["tools"]
    assert tool["function"]["name"] == "fragment"
    assert list(tool["function"]["parameters"]["properties"])[-1] == "code"
    assert "response_format" not in body
    system, user = body["messages"]
    assert system["role"] == "system"
    for template_id in TEMPLATES:
        assert template_id in system["content"]
    assert user == {"role": "user", "content": "Make a loan calculator"}


async def test_openai_json_content_mode(client: httpx.AsyncClient, fake_openai: FakeOpenAI) -> None:
    """Ollama answers as JSON content (its tool calls do not stream)."""
    fake_openai.script(FragmentReply(chunk_size=17))
    response, events = await post_chat(client, chat_body(model="qwen2.5-coder", provider="ollama"))

    assert response.status_code == 200
    assert_success_shape(events, saved=saves_turns(client))
    assert events[-3].data == expected_fragment()
    body = fake_openai.last_request.json
    assert "tools" not in body
    assert body["response_format"]["type"] == "json_schema"
    assert "JSON schema" in body["messages"][0]["content"]
    # Ollama needs no key, and the platform's OpenAI key must not travel there.
    assert received_key(fake_openai.last_request) == "no-key"


async def test_server_without_tools_falls_back_to_json(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes import ErrorReply

    fake_openai.script(
        ErrorReply(400, "This model does not support tools."),
        FragmentReply(mode="text"),
    )
    _, events = await post_chat(client, chat_body())

    assert_success_shape(events, saved=saves_turns(client))
    first, second = fake_openai.requests
    assert "tools" in first.json
    assert "tools" not in second.json
    assert second.json["response_format"]["type"] == "json_schema"


async def test_model_that_ignores_the_tool_still_answers(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply(mode="text"))
    _, events = await post_chat(client, chat_body())
    assert names(events)[-3:] == ["fragment", "usage", "done"]
    assert events[-3].data == expected_fragment()


async def test_anthropic_tool_use(client: httpx.AsyncClient, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        FragmentReply(
            chunk_size=30, input_tokens=1000, cache_read_tokens=600, cache_write_tokens=100
        )
    )
    body = chat_body(model="claude-sonnet-5-5", provider=None)
    body["model"]["provider"] = "Anthropic"  # the display name, matched case-insensitively
    response, events = await post_chat(client, body)

    assert response.status_code == 200
    assert_success_shape(events, saved=saves_turns(client))
    assert events[0].data["provider"] == "anthropic"
    assert events[-3].data == expected_fragment()
    usage = events[-2].data
    # Anthropic reports fresh input, cache reads and writes apart; input_tokens counts them all.
    assert usage["input_tokens"] == 1000
    assert usage["cache_read_tokens"] == 600
    assert usage["cache_write_tokens"] == 100

    sent = fake_anthropic.last_request
    assert sent.path == "/v1/messages"
    assert received_key(sent) == PLATFORM_KEYS["anthropic"]
    assert "anthropic-version" in sent.headers
    body = sent.json
    assert body["tool_choice"] == {"type": "tool", "name": "fragment"}
    (tool,) = body["tools"]
    assert tool["eager_input_streaming"] is True
    assert tool["cache_control"] == {"type": "ephemeral"}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["max_tokens"] > 1000
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Make a loan calculator"}]}
    ]


async def test_anthropic_text_answer(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(FragmentReply(mode="text"))
    _, events = await post_chat(client, chat_body(model="claude-haiku-4-5", provider="anthropic"))
    assert events[-3].name == "fragment"
    assert events[-3].data == expected_fragment()


async def test_gemini(client: httpx.AsyncClient, fake_gemini: FakeGemini) -> None:
    fake_gemini.script(FragmentReply(chunk_size=200, input_tokens=900, cache_read_tokens=50))
    response, events = await post_chat(
        client, chat_body(model="gemini-2.5-flash", provider="google")
    )

    assert response.status_code == 200
    assert_success_shape(events, saved=saves_turns(client))
    assert events[-3].data == expected_fragment()
    assert events[-2].data["input_tokens"] == 900
    assert events[-2].data["cache_read_tokens"] == 50

    sent = fake_gemini.last_request
    assert sent.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert sent.query == "alt=sse"
    assert received_key(sent) == PLATFORM_KEYS["google"]
    body = sent.json
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert list(config["responseJsonSchema"]["properties"])[-1] == "code"
    assert "code-interpreter-v1" in body["systemInstruction"]["parts"][0]["text"]
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Make a loan calculator"}]}]


async def test_pinned_template_is_forced(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    wrong = {**SAMPLE_FRAGMENT, "template": "gradio-developer"}
    fake_openai.script(FragmentReply(wrong))
    _, events = await post_chat(client, chat_body(template="streamlit-developer"))

    assert events[-3].data["template"] == "streamlit-developer"
    assert all(e.data["template"] == "streamlit-developer" for e in events if e.name == "partial")
    system = fake_openai.last_request.json["messages"][0]["content"]
    assert "streamlit-developer" in system
    assert "gradio-developer" not in system
    assert "nextjs-developer" not in system


async def test_missing_fields_are_filled_from_the_template(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    minimal = {"template": "nextjs-developer", "code": "export default () => null"}
    fake_openai.script(FragmentReply(minimal))
    _, events = await post_chat(client, chat_body())
    fragment = events[-3].data
    assert fragment["file_path"] == "pages/index.tsx"
    assert fragment["port"] == 3000


async def test_usage_is_estimated_when_the_provider_reports_none(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply(usage=False))
    _, events = await post_chat(client, chat_body())
    usage = events[-2].data
    assert usage["output_tokens"] == len(json.dumps(SAMPLE_FRAGMENT)) // 4
    system_chars = len(fake_openai.last_request.json["messages"][0]["content"])
    assert usage["input_tokens"] >= system_chars // 4


async def test_history_images_and_earlier_fragments(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    earlier = {**SAMPLE_FRAGMENT, "title": "Earlier"}
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    body = chat_body()
    body["messages"] = [
        {"role": "user", "content": [{"type": "text", "text": "first"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "done"}], "object": earlier},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "now like this"},
                {"type": "code", "text": "print(1)"},
                {"type": "image", "image": png},
            ],
        },
    ]
    fake_openai.script(FragmentReply())
    _, events = await post_chat(client, body)
    assert names(events)[-1] == "done"

    messages = fake_openai.last_request.json["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    # History windowing: an earlier answer is its commentary and a reference to its version;
    # the latest fragment's code (and its title) goes once, before the new message.
    assert messages[2]["content"].endswith(code_reference(1))
    assert SAMPLE_FRAGMENT["code"] not in messages[2]["content"]
    assert messages[3]["content"][0]["text"].endswith(SAMPLE_FRAGMENT["code"])
    assert "Earlier" in messages[3]["content"][0]["text"]
    assert messages[3]["content"][1:] == [
        {"type": "text", "text": "now like this"},
        {"type": "text", "text": "print(1)"},
        {"type": "image_url", "image_url": {"url": png}},
    ]


async def test_anthropic_images_and_history(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    body = chat_body(model="claude-sonnet-5-5", provider="anthropic")
    body["messages"] = [
        {"role": "assistant", "content": [{"type": "text", "text": "Hi! What shall I build?"}]},
        {"role": "user", "content": [{"type": "image", "image": png}]},
        {"role": "user", "content": [{"type": "text", "text": "this"}]},
    ]
    fake_anthropic.script(FragmentReply())
    await post_chat(client, body)
    messages = fake_anthropic.last_request.json["messages"]
    # A leading assistant turn is dropped and consecutive user turns merge.
    assert messages == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": png.split(",", 1)[1],
                    },
                },
                {"type": "text", "text": "this"},
            ],
        }
    ]


async def test_sampling_settings_reach_the_provider(
    client: httpx.AsyncClient, fake_gemini: FakeGemini, fake_anthropic: FakeAnthropic
) -> None:
    fake_gemini.script(FragmentReply())
    config = {"temperature": 0.3, "topP": 0.9, "topK": 40, "maxTokens": 4000}
    await post_chat(client, chat_body(model="gemini-2.5-pro", provider="google", config=config))
    generation = fake_gemini.last_request.json["generationConfig"]
    assert generation["temperature"] == 0.3
    assert generation["topP"] == 0.9
    assert generation["topK"] == 40
    assert generation["maxOutputTokens"] == 4000

    fake_anthropic.script(FragmentReply())
    await post_chat(client, chat_body(model="claude-opus-5-5", provider="anthropic", config=config))
    body = fake_anthropic.last_request.json
    assert (body["temperature"], body["top_p"], body["top_k"], body["max_tokens"]) == (
        0.3,
        0.9,
        40,
        4000,
    )


async def test_settings_without_overrides_use_the_default_urls(chat_settings: Settings) -> None:
    from fragments.llm.providers import resolve_endpoint

    plain = chat_settings.model_copy(update={"openai_base_url": None})
    endpoint = resolve_endpoint(plain, "openai", None, None)
    assert endpoint.base_url == "https://api.openai.com/v1"
    assert endpoint.api_key == PLATFORM_KEYS["openai"]
