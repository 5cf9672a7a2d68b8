"""Provider error objects of every shape read into a status, a kind and the provider's words."""

from __future__ import annotations

import pytest

from fragments.llm.faults import Fault, http_error, read_fault, stream_error


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        (  # OpenAI in a stream: a type and a code, no status
            {
                "error": {
                    "message": "m",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                    "param": None,
                }
            },
            Fault(400, "context_length_exceeded", "m"),
        ),
        (  # OpenAI server error
            {"error": {"message": "m", "type": "server_error", "param": None, "code": None}},
            Fault(500, "server_error", "m"),
        ),
        (  # Anthropic `event: error`
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            Fault(529, "overloaded_error", "Overloaded"),
        ),
        (  # Groq: the status it could not send
            {
                "error": {
                    "message": "m",
                    "type": "invalid_request_error",
                    "code": "tool_use_failed",
                    "status_code": 400,
                }
            },
            Fault(400, "tool_use_failed", "m"),
        ),
        (  # OpenRouter: a numeric code beside choices and usage
            {
                "error": {"code": 502, "message": "m"},
                "choices": [{"finish_reason": "error"}],
                "usage": {"prompt_tokens": 1},
            },
            Fault(502, None, "m"),
        ),
        (  # OpenRouter's older string code
            {"error": {"code": "server_error", "message": "m"}},
            Fault(500, "server_error", "m"),
        ),
        (  # Gemini
            {"error": {"code": 503, "message": "m", "status": "UNAVAILABLE"}},
            Fault(503, "UNAVAILABLE", "m"),
        ),
        (  # vLLM: a numeric code as text
            {
                "error": {
                    "object": "error",
                    "message": "m",
                    "type": "BadRequestError",
                    "code": "400",
                }
            },
            Fault(400, "BadRequestError", "m"),
        ),
        ({"error": "model not loaded"}, Fault(None, None, "model not loaded")),  # Ollama
        ({"error": {"message": "m", "type": "who_knows"}}, Fault(None, "who_knows", "m")),
    ],
)
def test_read_fault(body: object, fault: Fault) -> None:
    assert read_fault(body) == fault


def test_stream_errors_say_what_the_provider_said() -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    error = stream_error("Anthropic", overloaded)
    assert (error.code, error.status, error.retryable) == ("provider_unavailable", 529, True)
    assert error.detail == (
        "Anthropic is overloaded right now (overloaded_error): Overloaded; try again or pick "
        "another model."
    )
    unknown = stream_error("Ollama", {"error": "model not loaded"})
    assert (unknown.code, unknown.retryable) == ("provider_unavailable", True)
    assert unknown.detail.startswith("Ollama is unavailable right now (error in the stream)")
    refused = stream_error(
        "OpenRouter", {"error": {"code": 402, "message": "Insufficient credits"}}
    )
    assert (refused.code, refused.retryable) == ("provider_rejected", False)
    assert refused.detail == "OpenRouter refused the request (error 402): Insufficient credits."


def test_http_errors_keep_the_http_status() -> None:
    quota = (
        b'{"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota"}}'
    )
    error = http_error("OpenAI", 429, quota)
    assert (error.code, error.retryable) == ("provider_rate_limited", False)
    assert (
        error.detail
        == "OpenAI says this key has no quota left (HTTP 429): You exceeded your current quota."
    )
    page = http_error("OpenAI", 502, b"<html><body>502 Bad Gateway</body></html>")
    assert page.detail == (
        "OpenAI is unavailable right now (HTTP 502); try again or pick another model."
    )
    assert "Bad Gateway" in (page.upstream or "")
