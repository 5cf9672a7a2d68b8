"""Provider failures and bad answers become one `error` event with a stable code and a sentence."""

from __future__ import annotations

import socket

import httpx
import pytest

from fragments.config import Settings
from tests.chat.conftest import Event, app_client, chat_body, names, post_chat
from tests.fakes import SAMPLE_FRAGMENT, ErrorReply, FakeAnthropic, FakeGemini, FakeOpenAI
from tests.fakes import FragmentReply as Reply
from tests.fakes.streamer import FakeStreamer

pytestmark = pytest.mark.anyio


def the_error(events: list[Event]) -> dict[str, str]:
    assert events, "no events"
    assert events[-1].name == "error", names(events)
    assert "fragment" not in names(events)
    assert "done" not in names(events)
    error = events[-1].data
    assert set(error) == {"error", "detail"}
    assert isinstance(error["detail"], str)
    assert error["detail"].endswith(".")
    assert "Traceback" not in error["detail"]
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "provider_auth"),
        (403, "provider_auth"),
        (429, "provider_rate_limited"),
        (500, "provider_unavailable"),
        (503, "provider_unavailable"),
        (404, "provider_rejected"),
        (400, "provider_rejected"),
    ],
)
async def test_openai_http_errors(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, status: int, code: str
) -> None:
    fake_openai.script(ErrorReply(status, "the provider says no"))
    response, events = await post_chat(client, chat_body())
    assert response.status_code == 200
    error = the_error(events)
    assert error["error"] == code
    assert "OpenAI" in error["detail"]
    assert f"HTTP {status}" in error["detail"]
    assert len(fake_openai.requests) == 1  # provider_retries=0 here


async def test_a_refusal_carries_the_providers_words(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(ErrorReply(404, "The model `gpt-nope` does not exist."))
    _, events = await post_chat(client, chat_body())
    assert "does not exist" in the_error(events)["detail"]


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "provider_auth"), (429, "provider_rate_limited"), (529, "provider_unavailable")],
)
async def test_anthropic_http_errors(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic, status: int, code: str
) -> None:
    fake_anthropic.script(ErrorReply(status))
    _, events = await post_chat(client, chat_body(model="claude-haiku-4-5", provider="anthropic"))
    assert the_error(events)["error"] == code


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        (400, "API key not valid. Please pass a valid API key.", "provider_auth"),
        (400, "Request contains an invalid argument.", "provider_rejected"),
        (429, "Resource has been exhausted", "provider_rate_limited"),
    ],
)
async def test_gemini_http_errors(
    client: httpx.AsyncClient, fake_gemini: FakeGemini, status: int, message: str, code: str
) -> None:
    fake_gemini.script(ErrorReply(status, message))
    _, events = await post_chat(client, chat_body(model="gemini-2.5-flash", provider="google"))
    assert the_error(events)["error"] == code


async def test_a_5xx_is_retried_once_before_the_first_token(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(ErrorReply(502), Reply())
    async with app_client(chat_settings.model_copy(update={"provider_retries": 1})) as client:
        _, events = await post_chat(client, chat_body())
    assert names(events)[-1] == "done"
    assert len(fake_openai.requests) == 2
    # One `provider` event although two attempts were made.
    assert names(events).count("provider") == 1


async def test_a_429_is_retried_once(chat_settings: Settings, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(ErrorReply(429), Reply())
    async with app_client(chat_settings.model_copy(update={"provider_retries": 1})) as client:
        _, events = await post_chat(client, chat_body())
    assert names(events)[-1] == "done"
    assert len(fake_openai.requests) == 2


async def test_an_exhausted_quota_is_not_retried(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    body = {
        "error": {
            "message": "You exceeded your current quota, please check your plan.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    fake_openai.script(ErrorReply(429, body=body), Reply())
    async with app_client(chat_settings.model_copy(update={"provider_retries": 1})) as client:
        _, events = await post_chat(client, chat_body())
    error = the_error(events)
    assert error["error"] == "provider_rate_limited"
    assert "exceeded your current quota" in error["detail"]
    assert len(fake_openai.requests) == 1


async def test_connection_refused(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"baseURL": f"http://127.0.0.1:{port}/v1", "apiKey": "k"}
    _, events = await post_chat(client, chat_body(config=config))
    error = the_error(events)
    assert error["error"] == "provider_unavailable"
    assert f"127.0.0.1:{port}" in error["detail"]


async def test_no_first_token_in_time(chat_settings: Settings, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(stall_after=0))
    settings = chat_settings.model_copy(update={"first_event_timeout_seconds": 0.3})
    async with app_client(settings) as client:
        _, events = await post_chat(client, chat_body())
    error = the_error(events)
    assert error["error"] == "provider_timeout"
    assert "did not start answering" in error["detail"]
    # The provider sent its response head, so the model had started: `provider` came first.
    assert names(events) == ["provider", "error"]
    assert fake_openai.last_request.wait_disconnected(5)


async def test_silence_in_the_middle_of_an_answer(
    chat_settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(stall_after=40))
    settings = chat_settings.model_copy(update={"stream_idle_timeout_seconds": 0.3})
    async with app_client(settings) as client:
        _, events = await post_chat(
            client, chat_body(model="claude-haiku-4-5", provider="anthropic")
        )
    error = the_error(events)
    assert error["error"] == "provider_timeout"
    assert "stopped sending" in error["detail"]
    assert "partial" in names(events)
    assert fake_anthropic.last_request.wait_disconnected(5)


async def test_stream_cut_before_the_end(
    client: httpx.AsyncClient, fake_gemini: FakeGemini
) -> None:
    fake_gemini.script(Reply(cut_after=10))
    _, events = await post_chat(client, chat_body(model="gemini-2.5-flash", provider="google"))
    error = the_error(events)
    assert error["error"] == "provider_unavailable"
    assert "before the answer was complete" in error["detail"]


@pytest.mark.parametrize(
    "body", ["data: {oops\n\n", "data: [1, 2]\n\n", 'data: {"choices": 5}\n\n']
)
async def test_stream_this_app_cannot_read(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, body: str
) -> None:
    fake_openai.script(ErrorReply(200, body=body))
    _, events = await post_chat(client, chat_body())
    error = the_error(events)
    assert error["error"] == "provider_unavailable"
    assert "cannot read" in error["detail"]


async def test_a_bug_behind_the_seam_is_internal(chat_settings: Settings) -> None:
    """Whatever escapes the model layer becomes `internal`, with no trace in the stream."""
    broken = FakeStreamer(['{"commentary": "hal'], error=RuntimeError("secret internals"))
    async with app_client(chat_settings, llm=broken) as client:
        _, events = await post_chat(client, chat_body())
    error = the_error(events)
    assert error == {
        "error": "internal",
        "detail": "Something went wrong on our side; please try again.",
    }


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ('{"commentary": "x", "code": "print(1)"', "valid fragment"),
        ("I cannot help with that.", "valid fragment"),
        ({**SAMPLE_FRAGMENT, "template": "cobol-developer"}, "template that does not exist"),
        ({**SAMPLE_FRAGMENT, "code": "  "}, "no code"),
        ({**SAMPLE_FRAGMENT, "file_path": "/etc/passwd"}, "absolute"),
        ({**SAMPLE_FRAGMENT, "file_path": "../../app.py"}, "'..'"),
        (
            {**SAMPLE_FRAGMENT, "files": [{"file_path": "a/../../x.py", "file_content": "x"}]},
            "'..'",
        ),
        ({**SAMPLE_FRAGMENT, "files": [{"file_path": "", "file_content": "x"}]}, "without a path"),
    ],
)
async def test_invalid_output(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, answer: object, words: str
) -> None:
    fake_openai.script(Reply(answer))  # type: ignore[arg-type]
    _, events = await post_chat(client, chat_body())
    error = the_error(events)
    assert error["error"] == "invalid_output"
    assert words in error["detail"]


async def test_answer_cut_by_the_token_limit(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    text = '{"commentary": "x", "template": "code-interpreter-v1", "code": "print(1'
    fake_openai.script(Reply(text, finish_reason="length"))
    _, events = await post_chat(client, chat_body())
    error = the_error(events)
    assert error["error"] == "invalid_output"
    assert "output limit" in error["detail"]


async def test_json_wrapped_in_a_code_fence_is_accepted(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    import json

    fenced = "```json\n" + json.dumps(SAMPLE_FRAGMENT) + "\n```"
    fake_openai.script(Reply(fenced, mode="text"))
    _, events = await post_chat(client, chat_body(model="llama3.3", provider="ollama"))
    assert names(events)[-1] == "done"
    assert events[-3].data["code"] == SAMPLE_FRAGMENT["code"]


async def test_an_error_inside_the_stream(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    body = 'data: {"error": {"message": "overloaded", "code": 503}}\n\n'
    fake_openai.script(ErrorReply(200, body=body))
    _, events = await post_chat(client, chat_body())
    error = the_error(events)
    assert error["error"] == "provider_unavailable"
    assert "(error 503): overloaded;" in error["detail"]
