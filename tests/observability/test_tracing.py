"""Traces: one trace per chat (rate limit -> history window -> LLM stream with its HTTP call and
a first-token event -> persist) and per sandbox run (acquire -> install -> start -> execute ->
persist), with the instrumented server, SQL and Redis spans in the same tree; asserted with the
SDK's in-memory exporter on SQLite and PostgreSQL, in both auth modes. Then the real exporter:
OTLP/HTTP protobuf to a local endpoint of the test's own. And off: nothing installed at all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import SecretStr

from fragments.app import create_app
from fragments.config import Settings
from fragments.observability import tracing
from fragments.observability.tracing import start_tracing, tracing_wanted
from fragments.ports import DataFile, PhaseCallback
from fragments.schemas import Fragment, InterpreterResult, WebResult
from tests.chat.test_rate_limits import _wait_redis, private_redis
from tests.fakes import FakeOpenAI, FragmentReply
from tests.fakes.sandboxes import FakeSandboxes
from tests.modes import AuthMode, sign_in_for_mode
from tests.observability.collector import Collector

pytestmark = pytest.mark.anyio

OPENAI_KEY = "platform-openai-key-not-for-spans"


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private redis-server of this test's own (the shared one is never touched)."""
    with private_redis() as (port, _proc):
        yield f"redis://127.0.0.1:{port}/0"


def traced_settings(settings: Settings, fake: FakeOpenAI, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "openai_api_key": SecretStr(OPENAI_KEY),
            "openai_base_url": fake.base_url,
            "provider_retries": 0,
            "partial_interval_seconds": 0.02,
            # Health probes would be traces of their own beside the request's.
            "health_interval_seconds": 0,
            **extra,
        }
    )


class PhasedSandboxes(FakeSandboxes):
    """The stand-in backend, reporting the phases a real run goes through."""

    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
        data_files: tuple[DataFile, ...] = (),
    ) -> InterpreterResult | WebResult:
        for phase in ("acquiring", "installing", "starting", "running"):
            if on_phase is not None:
                await on_phase(phase)  # type: ignore[arg-type]
        return await super().execute(fragment, owner=owner, restart=restart, data_files=data_files)


@asynccontextmanager
async def traced_client(
    settings: Settings, exporter: InMemorySpanExporter, mode: AuthMode, **services: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, tracing=start_tracing(settings, exporter=exporter), **services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 123))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await sign_in_for_mode(client, mode)
            yield client


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The direct children of `parent`, in the order they started."""
    assert parent.context is not None
    found = [
        s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]
    return sorted(found, key=lambda s: s.start_time or 0)


def descendants(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    out: list[ReadableSpan] = []
    for child in children(spans, parent):
        out += [child, *descendants(spans, child)]
    return out


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {[s.name for s in spans]}"
    return found[0]


def instrumented(function: object) -> bool:
    """Whether an instrumentation replaced a function with its wrapper (wrapt's)."""
    return type(function).__name__ in ("FunctionWrapper", "BoundFunctionWrapper")


def is_sql(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return (
        span.kind == SpanKind.CLIENT
        and bool(attributes.get("db.system") or attributes.get("db.system.name"))
        and "redis" not in str(attributes.get("db.system") or attributes.get("db.system.name"))
    )


def is_redis(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return "redis" in str(attributes.get("db.system") or attributes.get("db.system.name") or "")


async def test_a_chat_is_one_trace_of_its_stages(
    db_settings: Settings,
    auth_mode: AuthMode,
    fake_openai: FakeOpenAI,
    redis_url: str,
) -> None:
    await _wait_redis(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    fake_openai.reset()
    fake_openai.default = FragmentReply(input_tokens=120, output_tokens=80)
    exporter = InMemorySpanExporter()
    settings = traced_settings(db_settings, fake_openai, redis_url=redis_url)
    try:
        async with traced_client(settings, exporter, auth_mode) as client:
            exporter.clear()  # the sign-up's spans are another trace
            body = {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "A calc"}]}],
                "template": "auto",
                "model": {"id": "gpt-4.1", "providerId": "openai"},
            }
            response = await client.post("/api/chat", json=body)
            assert response.status_code == 200, response.text
            assert "event: done" in response.text
    finally:
        fake_openai.default = None
    spans = exporter.get_finished_spans()
    server = one(spans, "POST /api/chat")
    assert server.kind == SpanKind.SERVER
    assert server.parent is None
    assert server.context is not None
    # One trace: every span of the request shares the server span's trace id.
    assert {s.context.trace_id for s in spans if s.context is not None} == {server.context.trace_id}

    stages = [s.name for s in children(spans, server) if s.name.startswith("chat.")]
    assert stages == ["chat.rate_limit", "chat.history_window", "chat.llm_stream", "chat.persist"]

    # The rate limit asked Redis (its commands are spans under the stage).
    assert any(is_redis(s) for s in descendants(spans, one(spans, "chat.rate_limit")))

    llm = one(spans, "chat.llm_stream")
    attributes = dict(llm.attributes or {})
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4.1"
    assert attributes["gen_ai.usage.input_tokens"] == 120
    assert attributes["gen_ai.usage.output_tokens"] == 80
    assert [e.name for e in llm.events] == ["first_token"]
    assert llm.start_time is not None
    assert llm.end_time is not None
    assert llm.start_time < llm.events[0].timestamp < llm.end_time
    # The provider call is the LLM span's child: a client span from the app's own transport.
    calls = [s for s in children(spans, llm) if s.kind == SpanKind.CLIENT and s.name == "POST"]
    assert len(calls) == 1, [
        (s.name, s.kind, dict(s.attributes or {})) for s in children(spans, llm)
    ]
    (http_call,) = calls
    assert http_call.kind == SpanKind.CLIENT
    call = dict(http_call.attributes or {})
    assert call["http.request.method"] == "POST"
    assert call["http.response.status_code"] == 200
    assert call["url.full"] == f"{fake_openai.base_url}/chat/completions"
    assert OPENAI_KEY not in repr([dict(s.attributes or {}) for s in spans])

    # Storing the answer is SQL under the persist stage (a signed-in caller's turn is stored).
    persist = one(spans, "chat.persist")
    stored = [s for s in descendants(spans, persist) if is_sql(s)]
    if auth_mode == "production":
        assert stored, [s.name for s in descendants(spans, persist)]
    # The statements are spans, each pool checkout (`Engine.connect`) is not.
    assert not [s.name for s in spans if s.name == "connect"]
    assert llm.end_time is not None
    assert persist.start_time is not None
    assert llm.end_time <= persist.start_time


async def test_a_failed_answer_marks_its_llm_span(
    settings: Settings, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes import ErrorReply

    fake_openai.reset()
    fake_openai.script(ErrorReply(401, "bad key"))
    exporter = InMemorySpanExporter()
    async with traced_client(traced_settings(settings, fake_openai), exporter, "guests") as client:
        body = {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "A calc"}]}],
            "template": "auto",
            "model": {"id": "gpt-4.1", "providerId": "openai"},
        }
        response = await client.post("/api/chat", json=body)
        assert "event: error" in response.text
    spans = exporter.get_finished_spans()
    llm = one(spans, "chat.llm_stream")
    assert (llm.attributes or {})["error.type"] == "provider_auth"
    assert not llm.status.is_ok
    (http_call,) = children(spans, llm)
    assert (http_call.attributes or {})["http.response.status_code"] == 401
    assert "chat.persist" not in [s.name for s in spans]


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
async def test_a_sandbox_run_is_one_trace_of_its_phases(
    db_settings: Settings, auth_mode: AuthMode, accept: str
) -> None:
    exporter = InMemorySpanExporter()
    sandboxes = PhasedSandboxes(sandbox_id="sbx1", stdout=["hi\n"])
    async with traced_client(db_settings, exporter, auth_mode, sandboxes=sandboxes) as client:
        exporter.clear()
        fragment = {"template": "code-interpreter-v1", "code": "print('hi')"}
        response = await client.post(
            "/api/sandbox", json={"fragment": fragment}, headers={"Accept": accept}
        )
        assert response.status_code == 200, response.text
        assert "hi" in response.text
    spans = exporter.get_finished_spans()
    server = one(spans, "POST /api/sandbox")
    run = one(spans, "sandbox.run")
    assert run.parent is not None
    assert server.context is not None
    assert run.parent.span_id == server.context.span_id
    assert dict(run.attributes or {}) == {
        "sandbox.template": "code-interpreter-v1",
        "sandbox.backend": "local",
        "sandbox.outcome": "ok",
    }
    assert [s.name for s in children(spans, run)] == [
        "sandbox.acquire",
        "sandbox.install",
        "sandbox.start",
        "sandbox.execute",
        "sandbox.persist",
    ]
    # A signed-in caller's run time and result are stored by SQL under the persist stage.
    if auth_mode == "production":
        assert any(is_sql(s) for s in descendants(spans, one(spans, "sandbox.persist")))


async def test_spans_are_exported_over_otlp_http(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "fragments-under-test")
    with Collector() as collector:
        traced = settings.model_copy(update={"otel_exporter_otlp_endpoint": collector.url})
        assert tracing_wanted(traced)
        app = create_app(traced, sandboxes=PhasedSandboxes())
        async with app.router.lifespan_context(app):
            assert tracing.enabled()
            assert instrumented(vars(httpx.AsyncHTTPTransport)["handle_async_request"])
            assert instrumented(vars(redis.asyncio.Redis)["execute_command"])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                fragment = {"template": "code-interpreter-v1", "code": "print(1)"}
                response = await client.post("/api/sandbox", json={"fragment": fragment})
                assert response.status_code == 200, response.text
        # Shutting down flushed the batch.
        assert not tracing.enabled()
        posts = collector.wait_for(lambda r: r.path == "/v1/traces")
    assert {r.headers["content-type"] for r in posts} == {"application/x-protobuf"}
    names: set[str] = set()
    services: set[str] = set()
    for post in posts:
        request = ExportTraceServiceRequest()
        request.ParseFromString(post.body)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                names |= {s.name for s in scope_spans.spans}
    assert services == {"fragments-under-test"}
    assert {"POST /api/sandbox", "sandbox.run", "sandbox.execute", "sandbox.persist"} <= names


def test_tracing_is_on_with_an_endpoint_or_when_asked(settings: Settings) -> None:
    assert not tracing_wanted(settings)
    with_endpoint = settings.model_copy(
        update={"otel_exporter_otlp_endpoint": "http://collector:4318"}
    )
    assert tracing_wanted(with_endpoint)
    assert tracing.traces_endpoint(with_endpoint) == "http://collector:4318/v1/traces"
    assert not tracing_wanted(with_endpoint.model_copy(update={"tracing": False}))
    forced = settings.model_copy(update={"tracing": True})
    assert tracing_wanted(forced)
    assert tracing.traces_endpoint(forced) == "http://localhost:4318/v1/traces"
    own = with_endpoint.model_copy(
        update={"otel_exporter_otlp_traces_endpoint": "http://other:4318/traces"}
    )
    assert tracing.traces_endpoint(own) == "http://other:4318/traces"


def test_span_urls_lose_credentials_and_query() -> None:
    url = "https://user:pw@generativelanguage.example/v1beta/models/g:stream?alt=sse&key=SECRET"
    assert tracing.url_without_secrets(url) == (
        "https://generativelanguage.example/v1beta/models/g:stream"
    )


async def test_off_nothing_is_instrumented(settings: Settings) -> None:
    """Without an endpoint: no provider, no wrapper on any library, and spans are one shared
    no-op; checked after the traced tests above ran in this process (they undid theirs)."""
    import sqlalchemy

    sandboxes = PhasedSandboxes()
    app = create_app(settings, sandboxes=sandboxes)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            fragment = {"template": "code-interpreter-v1", "code": "print(1)"}
            response = await client.post("/api/sandbox", json={"fragment": fragment})
            assert response.status_code == 200
        assert not tracing.enabled()
        assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
        assert tracing.span("anything") is tracing.span("other")
        with tracing.span("anything") as span:
            assert not span.is_recording()
        assert tracing.start_span("x") is tracing.INVALID_SPAN
        for owner, name in (
            (httpx.AsyncHTTPTransport, "handle_async_request"),
            (httpx.HTTPTransport, "handle_request"),
            (redis.asyncio.Redis, "execute_command"),
            (sqlalchemy, "create_engine"),
            (sqlalchemy.engine.Engine, "connect"),
        ):
            assert not instrumented(vars(owner)[name]), (owner, name)


OFF_SCRIPT = """
import asyncio, json, sys
import httpx
from fragments.app import create_app
from fragments.config import Settings
from tests.fakes.sandboxes import FakeSandboxes
from tests.fakes.streamer import FakeStreamer

async def main() -> None:
    settings = Settings(_env_file=None, data_dir=sys.argv[1])
    llm = FakeStreamer(['{"commentary": "c", "template": "code-interpreter-v1", "code": "1"}'])
    app = create_app(settings, sandboxes=FakeSandboxes(), llm=llm)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                "template": "auto",
                "model": {"id": "gpt-4.1", "providerId": "openai"},
            }
            chat = await client.post("/api/chat", json=body)
            assert "event: done" in chat.text, chat.text
            fragment = {"template": "code-interpreter-v1", "code": "print(1)"}
            run = await client.post("/api/sandbox", json={"fragment": fragment})
            assert run.status_code == 200, run.text
    # (redis-py imports the metrics SDK by itself when it is installed; it installs nothing.)
    loaded = [m for m in sys.modules if m.startswith(
        ("opentelemetry.sdk.trace", "opentelemetry.instrumentation", "opentelemetry.exporter",
         "sentry_sdk", "posthog"))]
    from opentelemetry import trace
    loaded += [type(trace.get_tracer_provider()).__name__]
    print(json.dumps(loaded))

asyncio.run(main())
"""


def test_off_nothing_is_even_imported(data_dir: Path) -> None:
    """A process that serves a chat and a run with nothing configured never imports the
    tracing SDK, an instrumentation, an exporter, Sentry or PostHog."""
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("OTEL_", "SENTRY_", "POSTHOG_", "FRAGMENTS_"))
    }
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT, str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == '["ProxyTracerProvider"]'


async def test_probes_have_no_trace_unless_the_variable_says(
    settings: Settings, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probes, scrapes and static files are left out by default; the standard variable
    (regular expressions searched in the path) replaces that list."""
    exporter = InMemorySpanExporter()
    traced = traced_settings(settings, fake_openai)
    async with traced_client(traced, exporter, "guests") as client:
        exporter.clear()
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/models")).status_code == 200
    names = [s.name for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert names == ["GET /api/models"]

    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "/api/models$")
    exporter = InMemorySpanExporter()
    async with traced_client(traced, exporter, "guests") as client:
        exporter.clear()
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/models")).status_code == 200
    names = [s.name for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert names == ["GET /healthz"]
