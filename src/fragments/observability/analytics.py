"""Product analytics: a few server-side events to PostHog, when POSTHOG_API_KEY is set.

The events say that something happened and how big or slow it was, never what was said or
written: ids, template, provider and model, token counts, durations, outcomes. Each event has a
fixed set of properties (`_ALLOWED`), enforced again in the client's `before_send`, so a future
call site cannot send a prompt or code by accident. Capturing only puts the event on the
library's in-memory queue; its background thread sends batches, so no request ever waits on
PostHog (a full queue drops events). `aclose` sends what is queued at shutdown.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

import structlog

from fragments.config import Settings

if TYPE_CHECKING:
    from posthog import Posthog

log = structlog.get_logger(__name__)

Event = Literal["chat answered", "sandbox run", "published", "signed up"]
# Who did it, as PostHog sees them: a user id, or this for anonymous guests (no person
# profile is made for it).
ANONYMOUS = "anonymous"
_COMMON = frozenset({"team_id", "guest"})
_ALLOWED: dict[str, frozenset[str]] = {
    "chat answered": _COMMON
    | {
        "conversation_id",
        "fragment_id",
        "template",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cost_usd",
        "duration_ms",
        "first_token_ms",
    },
    "sandbox run": _COMMON | {"template", "backend", "outcome", "duration_ms"},
    "published": _COMMON | {"link_id", "seconds"},
    "signed up": _COMMON | {"method", "from_guest"},
}
Value = str | int | float | bool | None
_FLUSH_SECONDS = 5.0


def only_allowed(event: dict[str, Any] | None) -> dict[str, Any] | None:
    """PostHog's `before_send`: keep an event's own allowed properties and the library's `$`
    ones; drop an event we do not know."""
    if event is None:
        return None
    allowed = _ALLOWED.get(str(event.get("event")))
    if allowed is None:
        return None
    properties = event.get("properties") or {}
    event["properties"] = {k: v for k, v in properties.items() if k in allowed or k.startswith("$")}
    return event


class Analytics:
    """The events the app sends; every method is a no-op without a client."""

    def __init__(self, client: Posthog | None = None) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> Analytics:
        """A client when POSTHOG_API_KEY is set (nothing is imported otherwise)."""
        secret = settings.posthog_api_key
        key = secret.get_secret_value().strip() if secret is not None else ""
        if not key:
            return cls(None)
        from posthog import Posthog

        client = Posthog(
            key,
            host=settings.posthog_host,
            # A PostHog outage must not pile up retries: a few, short, then the batch is dropped.
            max_retries=2,
            timeout=5,
            before_send=only_allowed,
            disable_geoip=True,
            # Never the library's own exception capture: exception messages can hold content.
            enable_exception_autocapture=False,
        )
        return cls(client)

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def capture(
        self, event: Event, user_id: str | None, team_id: str | None, **properties: Value
    ) -> None:
        """Queue one event (never blocks, never raises)."""
        client = self._client
        if client is None:
            return
        props: dict[str, Value] = {"team_id": team_id, "guest": user_id is None, **properties}
        if user_id is None:
            # Anonymous guests are one "person" for counting, with no profile of its own.
            props["$process_person_profile"] = False
        try:
            client.capture(event, distinct_id=user_id or ANONYMOUS, properties=props)
        except Exception as exc:  # analytics must never fail a request
            log.warning("analytics_capture_failed", analytics_event=event, error=repr(exc))

    async def aclose(self) -> None:
        """Send what is queued (waiting at most about `_FLUSH_SECONDS`) and stop the client."""
        client = self._client
        if client is None:
            return
        self._client = None
        try:
            await asyncio.wait_for(
                asyncio.to_thread(client.flush, _FLUSH_SECONDS), _FLUSH_SECONDS + 1
            )
        except Exception as exc:  # shutdown goes on without the last events
            log.warning("analytics_flush_failed", error=repr(exc))
        await asyncio.to_thread(client.shutdown)
