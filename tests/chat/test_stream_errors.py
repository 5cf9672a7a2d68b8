"""What a user sees when a provider fails inside a stream it answered 200 to, or stops cleanly
ending a stream whose answer is already complete: each case produced at the wire by the fakes,
read by the real parsers, seen through `/api/chat`, with guests allowed and with accounts only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import pytest

from fragments.config import Settings
from tests.chat.conftest import Event, app_client, chat_body, names, post_chat
from tests.fakes import (
    SAMPLE_FRAGMENT,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    FragmentReply,
    StreamError,
)

pytestmark = pytest.mark.anyio

Mode = Literal["guests", "accounts"]
CLAUDE = {"model": "claude-haiku-4-5", "provider": "anthropic"}
GEMINI = {"model": "gemini-2.5-flash", "provider": "google"}


@pytest.fixture(params=["guests", "accounts"])
async def client(request: pytest.FixtureRequest, chat_settings: Settings) -> AsyncIterator[Any]:
    """The app with one retry before the first token (as by default), guests allowed or not;
    with guests off, requests carry a signed-up user's token."""
    mode: Mode = request.param
    settings = chat_settings.model_copy(
        update={
            "provider_retries": 1,
            "stream_idle_timeout_seconds": 1.0,
            # No sandbox runs here; nor may a warm pool start.
            "sandbox_pool_sizes": dict.fromkeys(chat_settings.sandbox_pool_sizes, 0),
        }
    )
    headers: dict[str, str] = {}
    if mode == "accounts":
        # Signed up while guests are allowed, so this works whatever sign-up does without them;
        # the token is valid in the guest-less app (same secret, same database).
        async with app_client(settings) as guest_app:
            credentials = {"email": f"u{uuid.uuid4().hex[:12]}@example.com", "password": "pw" * 8}
            made = await guest_app.post("/api/auth/signup", json=credentials)
            assert made.status_code in (200, 201), made.text
            headers["Authorization"] = f"Bearer {made.json()['access_token']}"
        settings = settings.model_copy(update={"allow_guests": False})
    async with app_client(settings) as c:
        c.headers.update(headers)
        if mode == "accounts":
            # Guests are really off: the same request without the token is refused.
            refused = await c.post("/api/chat", json={}, headers={"Authorization": ""})
            assert refused.status_code == 401
        yield c


def the_error(events: list[Event]) -> dict[str, str]:
    assert events, "no events"
    assert names(events)[-1] == "error", names(events)
    assert "fragment" not in names(events)
    error: dict[str, str] = events[-1].data
    assert set(error) == {"error", "detail"}
    assert error["detail"].endswith(".")
    return error


def delivered(events: list[Event]) -> dict[str, Any]:
    """The usage of an answer delivered whole (fragment, usage, done)."""
    assert names(events)[-3:] == ["fragment", "usage", "done"], names(events)
    assert events[-3].data["code"] == SAMPLE_FRAGMENT["code"]
    usage: dict[str, Any] = events[-2].data
    return usage


# ---- errors inside the stream ------------------------------------------------------------------

CONTEXT = "This model's maximum context length is 128000 tokens. However, you requested 130512."


@pytest.mark.parametrize("after", [0, 6], ids=["before-content", "after-content"])
async def test_an_openai_error_chunk_with_usage_is_the_providers_refusal(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, after: int
) -> None:
    error = StreamError(400, CONTEXT, kind="context_length_exceeded", usage=True, after=after)
    fake_openai.script(FragmentReply(error=error), FragmentReply())
    _, events = await post_chat(client, chat_body())
    got = the_error(events)
    assert got["error"] == "provider_rejected"
    assert got["detail"] == (
        "OpenAI refused the request (context_length_exceeded): This model's maximum context "
        "length is 128000 tokens. However, you requested 130512."
    )
    assert len(fake_openai.requests) == 1  # a refused request is not sent again


async def test_an_openai_server_error_chunk_is_retried_then_reported(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    message = "The server had an error while processing your request. Sorry about that!"
    error = StreamError(500, message, usage=True)
    fake_openai.script(FragmentReply(error=error), FragmentReply(error=error))
    _, events = await post_chat(client, chat_body())
    got = the_error(events)
    assert got["error"] == "provider_unavailable"
    assert "Sorry about that" in got["detail"]
    assert len(fake_openai.requests) == 2


async def test_an_error_chunk_before_the_first_token_is_retried_into_an_answer(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply(error=StreamError(503, "try later")), FragmentReply())
    _, events = await post_chat(client, chat_body())
    delivered(events)
    assert len(fake_openai.requests) == 2
    assert names(events).count("provider") == 1


async def test_an_error_after_content_is_not_retried(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    # Tokens already reached the user: a transparent retry would need a `reset` (failover).
    error = StreamError(500, "upstream died", flavor="openrouter", usage=True, after=10)
    fake_openai.script(FragmentReply(error=error), FragmentReply())
    _, events = await post_chat(client, chat_body())
    got = the_error(events)
    assert got["error"] == "provider_unavailable"
    assert "upstream died" in got["detail"]
    assert len(fake_openai.requests) == 1


async def test_an_answer_cut_by_an_error_chunk_is_charged_what_the_chunk_reported(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    error = StreamError(502, "upstream died", flavor="openrouter", usage=True, after=10)
    fake_openai.script(FragmentReply(error=error, input_tokens=4321))
    _, events = await post_chat(client, chat_body())
    assert the_error(events)["error"] == "provider_unavailable"
    if "Authorization" in client.headers:  # usage is reported to signed-in users
        usage = (await client.get("/api/usage")).json()["month"]
        assert (usage["requests"], usage["input_tokens"]) == (1, 4321)


@pytest.mark.parametrize(
    ("status", "code", "requests"),
    [
        (502, "provider_unavailable", 2),
        (429, "provider_rate_limited", 2),
        (400, "provider_rejected", 1),
    ],
)
async def test_openrouter_error_chunks(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, status: int, code: str, requests: int
) -> None:
    """OpenRouter's chunk: `error: {code, message}` beside `choices` (finish_reason "error")
    and `usage` — neither makes it an answer, nor malformed output."""
    error = StreamError(status, "Provider returned error", flavor="openrouter", usage=True)
    fake_openai.script(FragmentReply(error=error), FragmentReply(error=error))
    _, events = await post_chat(client, chat_body())
    got = the_error(events)
    assert got["error"] == code
    assert f"(error {status}): Provider returned error" in got["detail"]
    assert len(fake_openai.requests) == requests


@pytest.mark.parametrize(
    ("status", "kind", "code", "requests"),
    [
        (400, "tool_use_failed", "provider_rejected", 1),
        (503, "service_unavailable", "provider_unavailable", 2),
    ],
)
async def test_groq_error_chunks(
    client: httpx.AsyncClient,
    fake_openai: FakeOpenAI,
    status: int,
    kind: str,
    code: str,
    requests: int,
) -> None:
    """Groq's chunk: `error: {message, type, code, status_code}`; the status decides."""
    error = StreamError(status, "Failed to call a function.", kind=kind, flavor="groq")
    fake_openai.script(FragmentReply(error=error), FragmentReply(error=error))
    config = {"baseURL": fake_openai.base_url, "apiKey": "user-groq-key"}
    body = chat_body(model="llama-3.3-70b-versatile", provider="groq", config=config)
    _, events = await post_chat(client, body)
    got = the_error(events)
    assert got["error"] == code
    assert got["detail"].startswith("Groq ")
    assert f"({kind}): Failed to call a function" in got["detail"]
    assert len(fake_openai.requests) == requests


async def test_anthropic_overloaded_event_is_retried_then_reported(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    error = StreamError(529, "Overloaded")
    fake_anthropic.script(FragmentReply(error=error), FragmentReply(error=error))
    _, events = await post_chat(client, chat_body(**CLAUDE))
    got = the_error(events)
    assert got == {
        "error": "provider_unavailable",
        "detail": "Anthropic is overloaded right now (overloaded_error): Overloaded; try again "
        "or pick another model.",
    }
    assert len(fake_anthropic.requests) == 2


async def test_anthropic_overloaded_then_an_answer(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(FragmentReply(error=StreamError(529, "Overloaded")), FragmentReply())
    _, events = await post_chat(client, chat_body(**CLAUDE))
    delivered(events)
    assert len(fake_anthropic.requests) == 2


async def test_anthropic_invalid_request_event_is_not_retried(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    error = StreamError(400, "prompt is too long: 208310 tokens > 200000 maximum")
    fake_anthropic.script(FragmentReply(error=error), FragmentReply())
    _, events = await post_chat(client, chat_body(**CLAUDE))
    got = the_error(events)
    assert got["error"] == "provider_rejected"
    assert got["detail"] == (
        "Anthropic refused the request (invalid_request_error): prompt is too long: "
        "208310 tokens > 200000 maximum."
    )
    assert len(fake_anthropic.requests) == 1


async def test_anthropic_overloaded_after_content(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(FragmentReply(error=StreamError(529, "Overloaded", after=12)))
    _, events = await post_chat(client, chat_body(**CLAUDE))
    assert the_error(events)["error"] == "provider_unavailable"
    assert len(fake_anthropic.requests) == 1


@pytest.mark.parametrize(
    ("status", "code", "requests"),
    [(503, "provider_unavailable", 2), (400, "provider_rejected", 1)],
)
async def test_gemini_error_chunks(
    client: httpx.AsyncClient, fake_gemini: FakeGemini, status: int, code: str, requests: int
) -> None:
    error = StreamError(status, "The model is overloaded.", usage=True)
    fake_gemini.script(FragmentReply(error=error), FragmentReply(error=error))
    _, events = await post_chat(client, chat_body(**GEMINI))
    got = the_error(events)
    assert got["error"] == code
    assert "The model is overloaded" in got["detail"]
    assert len(fake_gemini.requests) == requests


# ---- a complete answer, then no clean end -------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "then", "reported"),
    [
        (None, "stall", True),  # [DONE] came, the response never ended
        (1, "stall", False),  # finish_reason came, then silence: usage is estimated
        (2, "reset", True),  # usage came, then a TCP reset instead of [DONE]
        (1, "close", False),  # finish_reason, then the connection closed mid-body
    ],
)
async def test_a_complete_openai_answer_is_delivered(
    client: httpx.AsyncClient,
    fake_openai: FakeOpenAI,
    tail: int | None,
    then: Literal["stall", "close", "reset"],
    reported: bool,
) -> None:
    fake_openai.script(FragmentReply(input_tokens=1234, tail_events=tail, then=then))
    _, events = await post_chat(client, chat_body())
    usage = delivered(events)
    assert (usage["input_tokens"] == 1234) == reported
    assert len(fake_openai.requests) == 1
    assert fake_openai.last_request.wait_disconnected(5)


async def test_an_openai_answer_without_its_finish_is_not_delivered(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    """The boundary: all the text came but no finish_reason, then silence: not known complete."""
    fake_openai.script(FragmentReply(tail_events=0, then="stall"))
    _, events = await post_chat(client, chat_body())
    assert the_error(events)["error"] == "provider_timeout"


@pytest.mark.parametrize(
    ("tail", "then"), [(None, "stall"), (None, "reset"), (2, "close"), (2, "stall")]
)
async def test_a_complete_anthropic_answer_is_delivered(
    client: httpx.AsyncClient,
    fake_anthropic: FakeAnthropic,
    tail: int | None,
    then: Literal["stall", "close", "reset"],
) -> None:
    # tail 2: message_delta (stop_reason, usage) came, message_stop never did.
    fake_anthropic.script(FragmentReply(output_tokens=777, tail_events=tail, then=then))
    _, events = await post_chat(client, chat_body(**CLAUDE))
    assert delivered(events)["output_tokens"] == 777
    assert len(fake_anthropic.requests) == 1


@pytest.mark.parametrize("then", ["stall", "reset", "close"])
async def test_a_complete_gemini_answer_is_delivered(
    client: httpx.AsyncClient, fake_gemini: FakeGemini, then: Literal["stall", "close", "reset"]
) -> None:
    fake_gemini.script(FragmentReply(output_tokens=555, then=then))
    _, events = await post_chat(client, chat_body(**GEMINI))
    assert delivered(events)["output_tokens"] == 555
    assert len(fake_gemini.requests) == 1
