"""Failures of the model layer, each with a stable code for the stream's `error` event."""

from __future__ import annotations

from typing import Literal

StreamErrorCode = Literal[
    "provider_auth",
    "provider_rate_limited",
    "provider_unavailable",
    "provider_timeout",
    "invalid_output",
    "quota_exceeded",
    "internal",
]


class LLMError(Exception):
    """An answer could not be produced. `detail` is one human sentence safe to show a user;
    `upstream` keeps the provider's own words for the logs."""

    def __init__(
        self,
        code: StreamErrorCode,
        detail: str,
        *,
        status: int | None = None,
        upstream: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(detail)
        self.code: StreamErrorCode = code
        self.detail = detail
        self.status = status
        self.upstream = upstream
        self.retryable = retryable
        # Set by the streamer: part of the answer had already reached the caller.
        self.after_content = False


def status_error(provider: str, status: int, message: str | None) -> LLMError:
    """The error for an HTTP status a provider answered with."""
    said = _said(message)
    # Gemini answers a bad key with 400 INVALID_ARGUMENT "API key not valid".
    bad_key = status == 400 and "api key" in (message or "").lower()
    if status in (401, 403) or bad_key:
        return LLMError(
            "provider_auth",
            f"{provider} refused the API key (HTTP {status}); check the key in settings.",
            status=status,
            upstream=message,
        )
    if status == 429:
        return LLMError(
            "provider_rate_limited",
            f"{provider} is rate limiting these requests (HTTP 429); try again shortly.",
            status=status,
            upstream=message,
        )
    if status >= 500:
        return LLMError(
            "provider_unavailable",
            f"{provider} is unavailable right now (HTTP {status}); try again or pick another "
            "model.",
            status=status,
            upstream=message,
            retryable=True,
        )
    # 400, 404, 413, 422: the provider refused this request; its words help the user most.
    return LLMError(
        "provider_unavailable",
        f"{provider} refused the request (HTTP {status}){said}.",
        status=status,
        upstream=message,
    )


def _said(message: str | None) -> str:
    if not message:
        return ""
    text = " ".join(message.split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f": {text.rstrip('.')}"
