"""ASGI middleware: refuse oversized bodies early (before they are buffered) and set security
headers on every response."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fragments.config import Settings
from fragments.errors import error_body


async def _send_json(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps(error_body(code, detail)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(StarletteHTTPException):
    """Raised from `receive`; an HTTPException so FastAPI's body reading re-raises it (it turns
    any other exception into a 400) and the JSON handler answers 413."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"The request body is larger than {self.max_bytes // (1024 * 1024)} MB."
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    await _send_json(send, 400, "bad_request", "Invalid Content-Length header.")
                    return
                if announced > self.max_bytes:
                    await _send_json(send, 413, "payload_too_large", detail)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(detail)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, "payload_too_large", detail)


def frame_sources(settings: Settings) -> str:
    """The CSP frame-src: the preview origins of the active sandbox backend only.

    Local previews are `<port>-<id>.<preview domain>`, served by the app's proxy; E2B serves its
    own previews at `https://<port>-<id>.<E2B domain>` (E2B_DOMAIN, default e2b.app), so the
    frame-src follows that domain instead of allowing every E2B host name ever used.
    """
    if settings.sandbox_backend == "e2b":
        return f"https://*.{settings.e2b_domain}"
    domain = settings.resolved_preview_domain
    return f"http://*.{domain} https://*.{domain}"


class SecurityHeadersMiddleware:
    """A tight CSP for the app's own pages; previews live on their own origins."""

    def __init__(self, app: ASGIApp, frame_src: str) -> None:
        self.app = app
        csp = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self'; "
            f"frame-src {frame_src}; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
        )
        self.headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.headers
            await send(message)

        await self.app(scope, receive, with_headers)
