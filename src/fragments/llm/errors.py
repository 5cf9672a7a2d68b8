"""Failures of the model layer, each with a stable code for the stream's `error` event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fragments.llm.types import Usage

StreamErrorCode = Literal[
    "provider_auth",
    "provider_rate_limited",
    "provider_unavailable",
    "provider_timeout",
    "provider_rejected",
    "invalid_output",
    "quota_exceeded",
    "internal",
]

# How a provider failed, beyond its status: what a failover chain reports as its reason.
Failure = Literal[
    "server_error",
    "overloaded",
    "rate_limited",
    "timeout",
    "connection_failed",
    "connection_lost",
    "tls_error",
    "no_first_token",
    "stalled",
    "stream_cut",
    "unreadable",
]

# Error kinds that mean a key's money or quota ran out: a 429 that waiting does not cure.
_OUT_OF_QUOTA = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


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
        failure: Failure | None = None,
    ) -> None:
        super().__init__(detail)
        self.code: StreamErrorCode = code
        self.detail = detail
        self.status = status
        self.upstream = upstream
        self.retryable = retryable
        # How the provider failed, when the code alone does not say (see `Failure`).
        self.failure: Failure | None = failure
        # Set by the streamer: part of the answer had already reached the caller.
        self.after_content = False
        # Set by the streamer: usage the provider reported before failing (an error chunk may
        # carry it), so a cut answer is charged what it cost rather than an estimate.
        self.usage: Usage | None = None


def status_error(
    provider: str,
    status: int,
    message: str | None,
    *,
    kind: str | None = None,
    label: str | None = None,
) -> LLMError:
    """The error for a status a provider answered with: an HTTP status, or the status an error
    inside a stream stands for. `kind` is the provider's own error type or code, `label` how the
    detail names the failure (default `HTTP <status>`)."""
    said = _said(message)
    label = label or f"HTTP {status}"
    kind_l = (kind or "").lower()
    # Gemini answers a bad key with 400 INVALID_ARGUMENT "API key not valid".
    bad_key = status == 400 and "api key" in (message or "").lower()
    if status == 401 or bad_key:
        return LLMError(
            "provider_auth",
            f"{provider} refused the API key ({label}){said}; check the key in settings.",
            status=status,
            upstream=message,
        )
    if status == 403:
        return LLMError(
            "provider_auth",
            f"{provider} refused access ({label}){said}; check the key and its permissions "
            "in settings.",
            status=status,
            upstream=message,
        )
    if status == 429 and kind_l in _OUT_OF_QUOTA:
        return LLMError(
            "provider_rate_limited",
            f"{provider} says this key has no quota left ({label}){said}.",
            status=status,
            upstream=message,
            failure="rate_limited",
        )
    if status == 429:
        return LLMError(
            "provider_rate_limited",
            f"{provider} is rate limiting these requests ({label}){said}; try again shortly.",
            status=status,
            upstream=message,
            retryable=True,
            failure="rate_limited",
        )
    if status == 408:
        return LLMError(
            "provider_timeout",
            f"{provider} gave up on the request ({label}){said}; try again.",
            status=status,
            upstream=message,
            retryable=True,
            failure="timeout",
        )
    if status >= 500 or status < 400:
        # Anthropic's 529 / overloaded_error: busy, not down; a moment later usually works.
        busy = status == 529 or "overloaded" in kind_l
        state = "overloaded" if busy else "unavailable"
        return LLMError(
            "provider_unavailable",
            f"{provider} is {state} right now ({label}){said}; try again or pick another model.",
            status=status,
            upstream=message,
            retryable=True,
            failure="overloaded" if busy else "server_error",
        )
    # 400, 402, 404, 413, 422 (an invalid request, a context or token limit, no credits, an
    # unknown model): the same request fails again; the provider's words help the user most.
    return LLMError(
        "provider_rejected",
        f"{provider} refused the request ({label}){said}.",
        status=status,
        upstream=message,
    )


def _said(message: str | None) -> str:
    if not message or message.lstrip().startswith("<"):
        # Nothing said, or a proxy's HTML error page: not words for a user.
        return ""
    text = " ".join(message.split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f": {text.rstrip('.!')}"
