"""The application factory: routers, middleware and a lifespan that builds the typed State."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from fragments import __version__
from fragments.chat.response_cache import make_store
from fragments.config import Settings
from fragments.errors import error_body, install_error_handlers
from fragments.http_limits import (
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    frame_sources,
)
from fragments.jobs.board import job_board
from fragments.llm.breaker_gate import BreakerGate
from fragments.llm.catalogue import load_catalogue
from fragments.llm.failover import FailoverStreamer
from fragments.llm.health import HealthBoard
from fragments.llm.morph import MORPH_BREAKER, MorphClient
from fragments.llm.public import ModelPublic
from fragments.llm.streamer import DirectStreamer
from fragments.llm.types import ModelStreamer
from fragments.observability import metrics
from fragments.observability.analytics import Analytics
from fragments.observability.error_reports import start_error_reports, stop_error_reports
from fragments.observability.exposition import gauges_kept_fresh, metrics_router
from fragments.observability.logs import configure_logging, register_secrets
from fragments.observability.requests import RequestObservabilityMiddleware
from fragments.observability.tracing import Tracing, server_telemetry, start_tracing
from fragments.once import once_guard
from fragments.ports import SandboxService
from fragments.quota.budget import UsageCache
from fragments.quota.credits import SharedPrepareCredits
from fragments.quota.limits import ChatLimiter
from fragments.redis_client import SharedRedis
from fragments.resilience import BreakerRegistry
from fragments.sandbox.factory import create_sandbox_service
from fragments.sandbox.proxy import PreviewProxy, PreviewProxyMiddleware
from fragments.sandbox.public import TemplatePublic
from fragments.sandbox.templates import TEMPLATES
from fragments.state import State, StateDep
from fragments.store.db import Database
from fragments.store.migrate import upgrade
from fragments.store.retention import retention_job


def _static_dir() -> str:
    return str(resources.files("fragments.web").joinpath("static"))


def state_of(app: FastAPI) -> State:
    """The State the app's lifespan built (tests that need the app's own objects use this)."""
    state: State | None = getattr(app.state, "fragments", None)
    if state is None:
        raise RuntimeError("the app's lifespan has not run")
    return state


def _sandboxes(app: FastAPI) -> SandboxService | None:
    state: State | None = getattr(app.state, "fragments", None)
    return state.sandboxes if state is not None else None


def create_app(
    settings: Settings | None = None,
    *,
    sandboxes: SandboxService | None = None,
    llm: ModelStreamer | None = None,
    redis: SharedRedis | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """Build the app; nothing connects until the lifespan runs. Services passed in (a sandbox
    backend, a model streamer, a Redis client, tracing) are used instead of the ones built from
    the settings; the app closes them at shutdown all the same."""
    settings = settings or Settings()
    settings.check_production()
    metrics.enabled = settings.observability
    # Off: warnings and errors only (no per-request or per-answer info lines).
    configure_logging(logging.INFO if settings.observability else logging.WARNING)
    register_secrets(settings)
    # Both off (nothing imported) unless the environment configures them.
    tracing = tracing or start_tracing(settings)
    reporting_errors = start_error_reports(settings)
    domain = settings.resolved_preview_domain
    preview = PreviewProxy(
        domain, lambda: _sandboxes(app), max_body_bytes=settings.preview_max_body_bytes
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.auto_migrate:
            await upgrade(settings.resolved_migration_url, app_role=settings.database_app_role)
        db = Database(settings.resolved_database_url)
        if tracing is not None:
            tracing.activate()
            tracing.instrument_engine(db.engine)
        shared = redis
        if shared is None and settings.redis_url:
            shared = SharedRedis.connect(settings.redis_url)
        breakers = BreakerRegistry.from_settings(settings, shared)
        if sandboxes is not None:
            service = sandboxes
        elif not settings.embedded_node:
            # An API process of a fleet: sandboxes run on `fragments node` processes.
            from fragments.jobs.fleet import FleetSandboxService

            service = FleetSandboxService.connect(settings)
        else:
            service = await create_sandbox_service(settings, breakers, shared)
        health = HealthBoard(settings, shared)
        jobs = job_board(settings, service)
        if llm is None:
            streamer = DirectStreamer(settings)
            streamer.start_warm_up()
            # The failover chain, skipping providers whose breaker is open or whose health
            # checks say they are down.
            gate = BreakerGate(breakers, health)
            model: ModelStreamer = FailoverStreamer(streamer, settings, gate=gate)
        else:
            model = llm
        morph = MorphClient.from_settings(settings)
        if morph is not None:
            # Made now, so /api/status and /metrics list it before the first edit.
            breakers.breaker(MORPH_BREAKER)
            metrics.breaker_state(MORPH_BREAKER, await breakers.breaker(MORPH_BREAKER).state())
        app.state.fragments = State(
            settings=settings,
            db=db,
            sandboxes=service,
            llm=model,
            redis=shared,
            limiter=ChatLimiter(settings, shared),
            usage_cache=UsageCache(settings.token_budget_cache_seconds),
            prepare_credits=SharedPrepareCredits(shared, settings.sandbox_lifetime_seconds),
            response_store=make_store(settings, shared),
            breakers=breakers,
            health=health,
            jobs=jobs,
            analytics=Analytics.from_settings(settings),
            morph=morph,
        )
        metrics.monthly_budget(settings.monthly_llm_budget_usd)
        pool_slots = getattr(service, "pool_slots", None)
        unwatch = metrics.watch_pool(pool_slots) if callable(pool_slots) else None
        unwatch_async = [metrics.watch_async(breakers.export_metrics)]
        # The fleet's queue (FleetSandboxService): its streams' depths and dead letters.
        queue_gauges = getattr(service, "export_queue_metrics", None)
        if callable(queue_gauges):
            unwatch_async.append(metrics.watch_async(queue_gauges))
        try:
            guard = once_guard(shared, settings.data_dir)
            async with (
                retention_job(db, settings.retention_days, guard=guard),
                health.running(),
                gauges_kept_fresh(),
            ):
                yield
        finally:
            if unwatch is not None:
                unwatch()
            for stop in unwatch_async:
                stop()
            # Everything the State holds is closed here, and only here.
            await jobs.aclose()  # first: detached runs still use the sandboxes and the database
            await health.aclose()
            await model.aclose()
            if morph is not None:
                await morph.aclose()
            if shared is not None:
                await shared.aclose()
            await preview.aclose()
            await service.aclose()
            await db.aclose()
            await app.state.fragments.analytics.aclose()
            if tracing is not None:
                tracing.shutdown()
            if reporting_errors:
                stop_error_reports()

    app = FastAPI(
        title="Fragments",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        telemetry=server_telemetry(tracing),
    )
    install_error_handlers(app)

    # Previews are one origin per sandbox under the preview (or E2B's) domain.
    app.add_middleware(SecurityHeadersMiddleware, frame_src=frame_sources(settings))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.observability:
        # Outside the body limit (its 413s are logged and counted), inside the preview proxy
        # (a sandbox's own traffic is not the app's requests).
        app.add_middleware(RequestObservabilityMiddleware, trusted_proxies=settings.trusted_proxies)
    # Added last, so outermost: a preview host never reaches the routes or the app's headers.
    app.add_middleware(PreviewProxyMiddleware, proxy=preview)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(state: StateDep) -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            if state.db is not None:
                await state.db.ping()
            checks["database"] = "ok"
        except Exception as exc:  # every failure is reported, none is raised
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            await state.sandboxes.check()
            checks["sandbox"] = "ok"
        except Exception as exc:  # every failure is reported, none is raised
            checks["sandbox"] = f"unavailable: {exc}"
        ok = all(v == "ok" for v in checks.values())
        if ok:
            return JSONResponse({"status": "ready", "checks": checks})
        body = error_body(
            "not_ready",
            "A dependency is not ready: "
            + ", ".join(f"{k} ({v})" for k, v in checks.items() if v != "ok")
            + ".",
        )
        return JSONResponse(
            {**body, "checks": checks}, status_code=503, headers={"Retry-After": "5"}
        )

    @app.get("/api/models", response_model=list[ModelPublic])
    async def models() -> list[dict[str, object]]:
        return [m.to_public() for m in load_catalogue()]

    @app.get("/api/templates", response_model=dict[str, TemplatePublic])
    async def templates() -> dict[str, dict[str, object]]:
        return {tid: t.to_public() for tid, t in TEMPLATES.items()}

    from fragments.admin.router import router as admin_router
    from fragments.auth.keys import router as keys_router
    from fragments.auth.oidc_router import router as oidc_router
    from fragments.auth.recovery_router import router as recovery_router
    from fragments.auth.router import router as auth_router
    from fragments.auth.teams import router as teams_router
    from fragments.chat.router import router as chat_router
    from fragments.conversations.publish import router as publish_router
    from fragments.conversations.router import router as conversations_router
    from fragments.conversations.workspace_routes import workspace_routers
    from fragments.quota.router import router as quota_router
    from fragments.sandbox.router import router as sandbox_router
    from fragments.sandbox.ws import router as live_router
    from fragments.status import router as status_router

    app.include_router(auth_router)
    app.include_router(recovery_router)
    app.include_router(oidc_router)
    app.include_router(keys_router)
    app.include_router(teams_router)
    app.include_router(conversations_router)
    app.include_router(publish_router)
    for workspace_router in workspace_routers:
        app.include_router(workspace_router)
    app.include_router(chat_router)
    app.include_router(quota_router)
    app.include_router(sandbox_router)
    app.include_router(live_router)
    app.include_router(status_router)
    app.include_router(metrics_router(settings))
    app.include_router(admin_router)

    static_dir = _static_dir()
    app.mount("/static", StaticFiles(directory=static_dir), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(f"{static_dir}/index.html", headers={"Cache-Control": "no-cache"})

    return app
