"""Reading a provider's error object, from an error response or from inside a stream.

Every protocol says the same three things its own way: a status (Gemini `code`, OpenRouter
`code`, Groq `status_code`), a kind (OpenAI `type`/`code`, Anthropic `type`, Gemini `status`) and
a sentence. Once a stream has answered 200 its status line can no longer carry a failure, so the
kind is often all there is to tell an overloaded server from a request that will never work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fragments.llm.errors import LLMError, status_error

# The status an error kind stands for (lower-case; OpenAI, Anthropic, Gemini, Groq, OpenRouter,
# vLLM and llama.cpp names).
_KIND_STATUS = {
    "invalid_request_error": 400,
    "invalid_request": 400,
    "bad_request": 400,
    "badrequesterror": 400,
    "context_length_exceeded": 400,
    "string_above_max_length": 400,
    "tool_use_failed": 400,
    "json_validate_failed": 400,
    "invalid_argument": 400,
    "failed_precondition": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "unauthenticated": 401,
    "unauthorized": 401,
    "payment_required": 402,
    "insufficient_credits": 402,
    "permission_error": 403,
    "permission_denied": 403,
    "forbidden": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "not_found": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "resource_exhausted": 429,
    "too_many_requests": 429,
    "insufficient_quota": 429,
    "requests": 429,
    "tokens": 429,
    "api_error": 500,
    "server_error": 500,
    "internal_server_error": 500,
    "internal_error": 500,
    "internal": 500,
    "service_unavailable": 503,
    "unavailable": 503,
    "deadline_exceeded": 504,
    "overloaded_error": 529,
    "overloaded": 529,
}


@dataclass(frozen=True, slots=True)
class Fault:
    """What a provider's error object says: a status (None when it names none), its own kind
    of error, and its sentence."""

    status: int | None
    kind: str | None
    message: str | None


def read_fault(body: object) -> Fault:
    """The fault in an error body of any protocol (bytes, text or parsed JSON)."""
    if isinstance(body, (bytes, str)):
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        try:
            body = json.loads(text)
        except ValueError:
            return Fault(None, None, text.strip()[:500] or None)
    if isinstance(body, list) and body:
        body = body[0]
    if not isinstance(body, Mapping):
        return Fault(None, None, None)
    error = body.get("error", body)
    if isinstance(error, str):
        return Fault(_number(body.get("status_code")), None, error)
    if not isinstance(error, Mapping):
        error = {}
    message = error.get("message")
    if not isinstance(message, str):
        message = body.get("message") or body.get("detail")
        if not isinstance(message, str):
            message = None
    # A specific code ("context_length_exceeded") says more than a general type.
    names = [v for v in (error.get("code"), error.get("type"), error.get("status")) if _named(v)]
    kind = names[0] if names else None
    status = None
    for value in (
        error.get("status_code"),
        body.get("status_code"),
        error.get("code"),
        error.get("status"),
    ):
        status = _number(value)
        if status is not None:
            break
    if status is None:
        status = next((s for n in names if (s := _KIND_STATUS.get(n.lower()))), None)
    return Fault(status, kind, message)


def http_error(provider: str, status: int, body: bytes) -> LLMError:
    """The error for a provider's non-200 response."""
    fault = read_fault(body)
    return status_error(provider, status, fault.message, kind=fault.kind)


def stream_error(provider: str, body: Mapping[str, Any]) -> LLMError:
    """The error for an error object a provider sent inside a 200 stream. An error that names
    no status and no known kind counts as a failure of the provider (retryable), not of the
    request."""
    fault = read_fault(body)
    status = fault.status or 502
    label = fault.kind or (f"error {fault.status}" if fault.status else "error in the stream")
    return status_error(provider, status, fault.message, kind=fault.kind, label=label)


def _named(value: object) -> bool:
    return isinstance(value, str) and bool(value) and not value.isdigit() and value != "error"


def _number(value: object) -> int | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
        return value
    return None
