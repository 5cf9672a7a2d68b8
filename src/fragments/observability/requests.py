"""One JSON log line and the HTTP metrics for every request, with a request id.

The id is the caller's `X-Request-ID` when it is a sane one (letters, digits and `._:-`, at most
128 characters: a proxy's or a client's correlation id), else a new random one; it is sent back
in the response's `X-Request-ID` and is on every line logged while the request is served.

The route is the matched route's template (`/api/conversations/{conversation_id}`), never the
raw path: ids and tokens in paths stay out of logs and out of metric labels. A request no
route matched is `unmatched`.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fragments.http_client_ip import client_ip
from fragments.observability import metrics
from fragments.observability.context import RequestInfo, end_request, start_request

log = structlog.get_logger("fragments.request")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED = "unmatched"


def request_id_from(scope: Scope) -> str:
    """The caller's X-Request-ID when it is sane, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            if _SANE_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


def route_of(scope: Scope) -> str:
    """The template of the route that served the request (FastAPI leaves it in the scope)."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else UNMATCHED


class RequestObservabilityMiddleware:
    """Request id, one `http_request` log line, the HTTP metrics, and active users."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: str = "") -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        info = RequestInfo(request_id_from(scope))
        token = start_request(info)
        status = 500  # what the server answers if the app raises before responding
        header = info.request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, header.decode())
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - began
            route = route_of(scope)
            method = scope.get("method", "")
            metrics.http_request(method, route, status, seconds)
            if route.startswith("/api/"):
                who = info.user_id or "ip:" + client_ip(HTTPConnection(scope), self.trusted_proxies)
                metrics.ACTIVE.seen(who)
            log.info(
                "http_request",
                method=method,
                route=route,
                status=status,
                latency_ms=round(seconds * 1000, 1),
            )
            end_request(token)
