"""Error reports to Sentry (or any server that speaks its protocol), when SENTRY_DSN is set.

What leaves the process is an unexpected exception (the requests our 500 `internal` answers),
its stack without local variables, and the request's method, route and headers less anything
secret. Never request bodies (prompts, code, passwords), cookies, query strings (keys travel
there), client addresses or anything from a caller's headers that can authenticate. Tracing
in Sentry is off unless SENTRY_TRACES_SAMPLE_RATE asks for it (OpenTelemetry does traces), and
no trace header is added to outgoing requests (providers and sandboxes get none of ours).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from fragments import __version__
from fragments.config import Settings

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

FILTERED = "[Filtered]"
# Header and field names whose values can authenticate someone, wherever they appear.
_SECRET_NAME = re.compile(
    r"authorization|cookie|key|token|secret|passw|session|csrf|signature|credential|auth",
    re.IGNORECASE,
)
# Frame variables (should a future setting send them) and `extra` fields scrubbed by name too.
_DENYLIST = [
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "token",
    "secret",
    "secret_key",
    "password",
    "passwd",
    "session",
    "x_api_key",
]


def _scrub_mapping(values: Any) -> Any:
    if not isinstance(values, dict):
        return values
    return {
        name: FILTERED if _SECRET_NAME.search(str(name)) else value
        for name, value in values.items()
    }


def _without_query(url: Any) -> Any:
    if not isinstance(url, str):
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def scrub_event(event: Event, _hint: Hint | None = None) -> Event:
    """Sentry's `before_send`: strip what can authenticate or identify from an event."""
    request = event.get("request")
    if isinstance(request, dict):
        request["headers"] = _scrub_mapping(request.get("headers"))
        for field in ("cookies", "data", "query_string", "env"):
            request.pop(field, None)
        if "url" in request:
            request["url"] = _without_query(request["url"])
    user = event.get("user")
    if isinstance(user, dict):
        user.pop("ip_address", None)
        user.pop("email", None)
    if "extra" in event:
        event["extra"] = _scrub_mapping(event["extra"])
    breadcrumbs = event.get("breadcrumbs")
    values = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else None
    for crumb in values or ():
        data = crumb.get("data") if isinstance(crumb, dict) else None
        if isinstance(data, dict):
            crumb["data"] = _scrub_mapping(data)
            if "url" in data:
                crumb["data"]["url"] = _without_query(data["url"])
    return event


def start_error_reports(settings: Settings) -> bool:
    """Start the Sentry SDK when SENTRY_DSN is set (else import nothing); True when started.
    The SDK is process-wide: the process's one app starts it, `stop_error_reports` ends it."""
    dsn = settings.sentry_dsn.get_secret_value().strip() if settings.sentry_dsn else ""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.scrubber import EventScrubber

    rate = settings.sentry_traces_sample_rate
    sentry_sdk.init(
        dsn=dsn,
        environment=settings.sentry_environment or settings.env,
        release=settings.sentry_release or f"fragments@{__version__}",
        send_default_pii=False,
        # Bodies hold prompts, code and passwords; locals hold keys and user content.
        max_request_body_size="never",
        include_local_variables=False,
        before_send=scrub_event,
        event_scrubber=EventScrubber(denylist=_DENYLIST, recursive=True),
        # 0 means off, not "sample nothing": no transaction is built at all.
        traces_sample_rate=rate if rate > 0 else None,
        trace_propagation_targets=[],
    )
    return True


def stop_error_reports(timeout: float = 2.0) -> None:
    """Send what is queued (up to `timeout` seconds) and stop the SDK."""
    import sentry_sdk

    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout)
