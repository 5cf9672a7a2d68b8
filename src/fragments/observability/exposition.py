"""Where Prometheus reads the metrics: `GET /metrics` on the app, or a port of their own.

Who may read them (`access`):
- `FRAGMENTS_METRICS_TOKEN` set: `/metrics` answers a request with `Authorization: Bearer
  <token>`, 401 otherwise.
- else `FRAGMENTS_METRICS_PORT` set: `/metrics` on the app is 404; the metrics are served on
  that port (bound to `FRAGMENTS_METRICS_HOST`, 127.0.0.1 by default) by `fragments serve`.
- else, in development, `/metrics` is open (the app listens on 127.0.0.1 by default); in
  production it is 404: nothing is exposed until an operator chooses how.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server

from fragments.config import Settings
from fragments.errors import error_body
from fragments.observability import metrics

Access = Literal["open", "token", "off"]

# How often each worker writes its source-read gauges when several workers share the folder.
REFRESH_SECONDS = 5.0


def access(settings: Settings) -> Access:
    """How `/metrics` on the app answers (see the module)."""
    if settings.metrics_token is not None:
        return "token"
    if settings.metrics_port is not None or settings.env == "production":
        return "off"
    return "open"


def _authorised(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def metrics_router(settings: Settings) -> APIRouter:
    """The `/metrics` route, answering as `access` says."""
    router = APIRouter()
    mode = access(settings)
    secret = settings.metrics_token.get_secret_value() if settings.metrics_token else ""

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if mode == "off":
            return JSONResponse(error_body("not_found", "Not Found"), status_code=404)
        if mode == "token" and not _authorised(request, secret):
            return JSONResponse(
                error_body(
                    "unauthorized",
                    "The metrics need 'Authorization: Bearer <FRAGMENTS_METRICS_TOKEN>'.",
                ),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        metrics.refresh()
        await metrics.refresh_async()
        return Response(generate_latest(metrics.registry()), media_type=CONTENT_TYPE_LATEST)

    return router


def serve_metrics_port(settings: Settings) -> None:
    """Serve the metrics on `FRAGMENTS_METRICS_PORT` from a thread of this process (the CLI
    calls it once, in the process that supervises the workers); nothing when unset."""
    if settings.metrics_port is None:
        return
    start_http_server(settings.metrics_port, settings.metrics_host, registry=metrics.registry())


@asynccontextmanager
async def gauges_kept_fresh() -> AsyncIterator[None]:
    """With several workers, write this worker's source-read gauges every few seconds: a
    scrape reaches one worker, which cannot read the others' pools."""
    if metrics.multiprocess_dir() is None:
        yield
        return

    async def loop() -> None:
        while True:
            metrics.refresh()
            await metrics.refresh_async()
            await asyncio.sleep(REFRESH_SECONDS)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
