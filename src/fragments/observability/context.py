"""What is known about the request being served, for every log line and metric made while
it is served.

The request middleware (`observability.requests`) puts one `RequestInfo` in a context variable;
the code that learns more later (the auth dependency: who calls; the quota check: their tier)
fills it in. The object is shared, not copied, so a field set deep in a handler is seen by the
middleware's own line at the end and by every line logged after it."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(slots=True)
class RequestInfo:
    request_id: str
    user_id: str | None = None
    team_id: str | None = None
    # The caller's plan as the quota check resolved it (guest, free, pro, enterprise, own_key).
    tier: str | None = None
    # Secrets this request brought (a caller's own provider key): scrubbed from its lines.
    secrets: list[str] | None = None


_current: ContextVar[RequestInfo | None] = ContextVar("fragments_request", default=None)


def current_request() -> RequestInfo | None:
    """The request being served, or None outside a request."""
    return _current.get()


def start_request(info: RequestInfo) -> Token[RequestInfo | None]:
    """Make `info` the current request for this context and the tasks it starts."""
    return _current.set(info)


def end_request(token: Token[RequestInfo | None]) -> None:
    """Forget the request `start_request` began (the context may serve another)."""
    _current.reset(token)


def note_caller(user_id: str | None, team_id: str | None) -> None:
    """Record who the current request acts for (no-op outside a request)."""
    info = _current.get()
    if info is not None:
        info.user_id = user_id
        info.team_id = team_id


def note_tier(tier: str) -> None:
    """Record the caller's plan as the quota check resolved it (no-op outside a request)."""
    info = _current.get()
    if info is not None:
        info.tier = tier


def current_tier() -> str:
    """The current request's tier, or "unknown" (rate limits off, or outside a request)."""
    info = _current.get()
    return info.tier if info is not None and info.tier is not None else "unknown"


def note_secret(value: str | None) -> None:
    """A secret the current request carries, never to appear in its log lines."""
    info = _current.get()
    if info is not None and value:
        if info.secrets is None:
            info.secrets = []
        info.secrets.append(value)
