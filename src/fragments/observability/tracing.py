"""Traces with OpenTelemetry, switched on by the standard `OTEL_*` variables.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, or with
`FRAGMENTS_TRACING=true`: an SDK tracer provider exporting over OTLP/HTTP (protobuf), the
maintained instrumentations for the server (FastAPI's own), SQLAlchemy, Redis and the HTTP clients
(httpx, httpx2), and the app's own spans (`span`, `start_span`). The SDK reads the rest of the
standard variables itself: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._COMPRESSION`.

Off, nothing of it is imported or installed: no SDK provider, no wrapper around any library,
and `span()` hands back one shared no-op object, so a span call on a hot path costs a global
read and a branch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from fragments import __version__
from fragments.config import Settings

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sqlalchemy.ext.asyncio import AsyncEngine

Attributes = Mapping[str, AttributeValue]

# The tracer of the running app; None while tracing is off (the module's only state).
_tracer: trace.Tracer | None = None

# Probes and scrapes would be most of the traces and tell nothing.
_DEFAULT_EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$,/static/"


class _Instrumentor(Protocol):
    """What this module uses of an OpenTelemetry instrumentor (`BaseInstrumentor`)."""

    @property
    def is_instrumented_by_opentelemetry(self) -> bool: ...

    def instrument(self, **kwargs: object) -> object: ...

    def uninstrument(self, **kwargs: object) -> object: ...


class _NoSpan:
    """The context manager `span()` returns while tracing is off: one shared instance."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *_exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def enabled() -> bool:
    """Whether spans are recorded in this process now."""
    return _tracer is not None


def span(
    name: str, attributes: Attributes | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> AbstractContextManager[Span]:
    """A child span of the current one around a block (current inside it; an exception
    escaping the block is recorded on it). A no-op while tracing is off."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes, kind=kind)


def start_span(name: str, attributes: Attributes | None = None) -> Span:
    """A child span of the current one that outlives a block (a stream that yields): not made
    current; end it with `end_span`. The shared invalid span while tracing is off."""
    tracer = _tracer
    if tracer is None:
        return INVALID_SPAN
    return tracer.start_span(name, attributes=attributes)


class Stages:
    """Consecutive child spans of one parent, one per stage a callee reports: entering a
    stage ends the one before, `close` ends the last. Nothing while tracing is off."""

    __slots__ = ("_names", "_open", "_parent")

    def __init__(self, parent: Span, names: Mapping[str, str]) -> None:
        self._parent = parent
        # Stage as reported -> span name.
        self._names = names
        self._open: Span | None = None

    def enter(self, stage: str) -> None:
        tracer = _tracer
        if tracer is None or not self._parent.is_recording():
            return
        self.close()
        context = trace.set_span_in_context(self._parent)
        self._open = tracer.start_span(self._names.get(stage, stage), context=context)

    def close(self, error: str | None = None) -> None:
        if self._open is not None:
            end_span(self._open, error=error)
            self._open = None


def current(span: Span) -> AbstractContextManager[Span]:
    """Make `span` the current one inside a block without ending it (a task created inside
    the block keeps it as its parent)."""
    if not span.is_recording():
        return _NO_SPAN
    return trace.use_span(span, end_on_exit=False)


def end_span(span: Span, *, error: str | None = None, attributes: Attributes | None = None) -> None:
    """End a span from `start_span` once, with its last attributes and an error code if it
    failed; does nothing for an ended or no-op span."""
    if not span.is_recording():
        return
    if attributes:
        span.set_attributes(attributes)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def url_without_secrets(url: str) -> str:
    """A URL fit for a span: no user info, no query string (providers take keys there)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@lru_cache(maxsize=64)
def _client_attributes(method: str, url: str) -> Mapping[str, AttributeValue]:
    # A process calls a handful of provider URLs: parse and scrub each once, not on every call
    # (the SDK copies the attributes into the span, so one mapping serves them all).
    parts = urlsplit(url)
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method,
        "url.full": url_without_secrets(url),
        "server.address": parts.hostname or "",
    }
    if parts.port is not None:
        attributes["server.port"] = parts.port
    return attributes


@contextmanager
def client_span(method: str, url: str) -> Iterator[Span]:
    """An HTTP client span (semantic conventions' names) for a transport no instrumentation
    knows; set `http.response.status_code` on it once the head arrives."""
    tracer = _tracer
    if tracer is None:
        yield INVALID_SPAN
        return
    attributes = _client_attributes(method, url)
    with tracer.start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes) as s:
        yield s


def response_status(span: Span, status: int) -> None:
    """Record an HTTP response's status on a client span (an error from 400 on)."""
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))


def tracing_wanted(settings: Settings) -> bool:
    """On with FRAGMENTS_TRACING=true, off with false; unset, on when an OTLP endpoint is set."""
    if settings.tracing is not None:
        return settings.tracing
    return bool(settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint)


def traces_endpoint(settings: Settings) -> str:
    """Where spans are sent: the traces endpoint as given, else `<endpoint>/v1/traces` (the
    OTLP rule), else a collector on this machine."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    base = settings.otel_exporter_otlp_endpoint or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def _excluded_paths() -> re.Pattern[str]:
    """The request paths without a trace: the standard variables' comma-separated regular
    expressions (searched in the path), else the probes, scrapes and static files."""
    urls = (
        os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS")
        or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
        or _DEFAULT_EXCLUDED_URLS
    )
    patterns = [url.strip() for url in urls.split(",") if url.strip()]
    # No pattern: nothing is excluded (a pattern that never matches).
    return re.compile("|".join(f"(?:{p})" for p in patterns) or r"(?!)")


def server_telemetry(tracing: Tracing | None) -> TelemetryConfig:
    """`FastAPI(telemetry=...)` for an app: FastAPI's server spans when tracing is on; off,
    all of FastAPI's telemetry off, so a request does not even look for a global provider."""
    if tracing is None:
        return {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    return tracing.server_telemetry()


class Tracing:
    """Tracing switched on for one app: its provider, and what was instrumented (undone, and
    the last spans flushed, by `shutdown`)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._undo: list[Callable[[], object]] = []

    def activate(self) -> None:
        """Record the app's own spans and instrument the libraries every app of the process
        shares (Redis and the HTTP clients; their wrappers are on the classes)."""
        global _tracer
        _tracer = self.provider.get_tracer("fragments", __version__)
        from opentelemetry.instrumentation.httpx import (
            HTTPX2ClientInstrumentor,
            HTTPXClientInstrumentor,
        )
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        for instrumentor in (RedisInstrumentor(), HTTPXClientInstrumentor()):
            self._instrument(instrumentor)
        self._instrument(HTTPX2ClientInstrumentor())

    def _instrument(self, instrumentor: _Instrumentor) -> None:
        # The instrumentors are process-wide singletons: one app at a time owns them.
        if instrumentor.is_instrumented_by_opentelemetry:
            return
        instrumentor.instrument(tracer_provider=self.provider)
        self._undo.append(instrumentor.uninstrument)

    def server_telemetry(self) -> TelemetryConfig:
        """FastAPI's own server instrumentation, for `FastAPI(telemetry=...)`: a server span for
        every request but the excluded ones, parent of the app's spans. FastAPI's rather than
        the contrib ASGI middleware: profiled while streaming, that middleware's per-request
        setup and its wrapper around every SSE chunk sent were 2-3 % of the process's CPU,
        FastAPI's under 1 % (a third of what traces cost in all). Its metrics and logs stay
        off (Prometheus and the JSON log lines have those), and so do its per-operation spans
        (dependencies, endpoint, serialization: more spans an answer, telling little)."""
        excluded = _excluded_paths()
        return {
            "tracer_provider": self.provider,
            "tracing": True,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
            "exclude": lambda scope: bool(excluded.search(scope.get("path", ""))),
        }

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A span for every SQL statement the app's engine runs."""
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        instrumentor = SQLAlchemyInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            return
        # Its version check stops at SQLAlchemy 2.0; the engine events it uses are the same in
        # 2.1 (the tests see the spans).
        instrumentor.instrument(
            engine=engine.sync_engine, tracer_provider=self.provider, skip_dep_check=True
        )
        self._undo.append(instrumentor.uninstrument)
        # It also wraps `Engine.connect` with a `connect` span of its own, for every session: a
        # checkout from the pool, not a connection made (five of a chat's spans, each exported,
        # and none of them telling more than the statements beneath it). Its uninstrument
        # unwraps it again harmlessly.
        from opentelemetry.instrumentation.utils import unwrap
        from sqlalchemy.engine import Engine

        unwrap(Engine, "connect")

    def shutdown(self) -> None:
        """Undo the instrumentation, stop recording and export what is left."""
        global _tracer
        _tracer = None
        while self._undo:
            self._undo.pop()()
        self.provider.shutdown()


def _resource_attributes() -> dict[str, str]:
    attributes = {"service.version": __version__}
    # OTEL_SERVICE_NAME (read by the SDK) names the service; this is only the default.
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "fragments"
    return attributes


def start_tracing(
    settings: Settings,
    *,
    exporter: SpanExporter | None = None,
    batch: bool | None = None,
) -> Tracing | None:
    """Tracing for one app when the settings ask for it (or an exporter is given), else None:
    then nothing is imported or instrumented. `exporter` replaces the OTLP exporter (tests
    pass an in-memory one, exported as each span ends unless `batch`)."""
    if exporter is None and not tracing_wanted(settings):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=traces_endpoint(settings))
        batch = True if batch is None else batch
    # The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (parent-based,
    # always on, by default).
    provider = TracerProvider(resource=Resource.create(_resource_attributes()))
    processor: SpanProcessor = (
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    provider.add_span_processor(processor)
    return Tracing(provider)


__all__ = [
    "INVALID_SPAN",
    "Span",
    "Tracing",
    "client_span",
    "current",
    "enabled",
    "end_span",
    "server_telemetry",
    "span",
    "start_span",
    "start_tracing",
    "tracing_wanted",
]
