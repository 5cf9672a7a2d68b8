"""The log lines: one `http_request` line per request with its id, caller, route template,
status and latency; the request id on every line of the request and in `X-Request-ID`; chat and
sandbox lines with their figures; JSON from the standard library's loggers too."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import uuid

import pytest
import structlog

from fragments.config import Settings
from fragments.observability.logs import REDACTED, stdlib_logging_config
from tests.apps import app_client
from tests.chat.conftest import chat_body, parse_sse
from tests.fakes import FakeOpenAI
from tests.fakes import FragmentReply as Reply
from tests.fakes.sandboxes import FakeSandboxes
from tests.modes import AuthMode, a_conversation, sign_in_for_mode
from tests.observability.conftest import LogLines

pytestmark = pytest.mark.anyio


async def test_request_line_fields_and_ids(
    chat_settings: Settings, auth_mode: AuthMode, logs: LogLines
) -> None:
    async with app_client(chat_settings) as client:
        await sign_in_for_mode(client, auth_mode)
        conversation = await a_conversation(client, "c-" + uuid.uuid4().hex[:8])
        logs.clear()

        # A sane incoming id is kept and returned; the route is the template, not the path.
        response = await client.get(
            f"/api/conversations/{conversation}", headers={"X-Request-ID": "edge-42.a:b"}
        )
        assert response.headers["X-Request-ID"] == "edge-42.a:b"
        (line,) = logs.events("http_request")
        assert line["request_id"] == "edge-42.a:b"
        assert line["route"] == "/api/conversations/{conversation_id}"
        assert conversation not in json.dumps(line)
        assert line["method"] == "GET"
        assert line["status"] == response.status_code
        assert isinstance(line["latency_ms"], float)
        assert line["latency_ms"] >= 0
        assert line["level"] == "info"
        assert "timestamp" in line
        if auth_mode == "production":
            me = (await client.get("/api/auth/me")).json()
            assert line["user_id"] == me["id"]
            assert line["team_id"]
        else:
            assert "user_id" not in line  # an anonymous guest
        logs.clear()

        # An insane one (too long, or with spaces or quotes) is replaced by a fresh id.
        for bad in ("x" * 129, "has space", 'quote"d', ""):
            response = await client.get("/healthz", headers={"X-Request-ID": bad})
            fresh = response.headers["X-Request-ID"]
            assert fresh != bad
            assert len(fresh) == 32
        lines = logs.events("http_request")
        assert [line["route"] for line in lines] == ["/healthz"] * 4
        assert len({line["request_id"] for line in lines}) == 4
        logs.clear()

        # No route matched: the template is "unmatched", never the path someone sent.
        await client.get("/api/no-such-thing/secret-looking-123")
        (line,) = logs.events("http_request")
        assert line["route"] == "unmatched"
        assert line["status"] == 404
        assert "secret-looking-123" not in logs.raw


async def test_chat_line_carries_the_answer_and_the_request_id(
    chat_settings: Settings, auth_mode: AuthMode, fake_openai: FakeOpenAI, logs: LogLines
) -> None:
    fake_openai.script(Reply(input_tokens=1200, output_tokens=300, cache_read_tokens=1000))
    async with app_client(chat_settings) as client:
        await sign_in_for_mode(client, auth_mode)
        logs.clear()
        response = await client.post(
            "/api/chat", json=chat_body(), headers={"X-Request-ID": "chat-req-1"}
        )
        assert response.status_code == 200
        usage = next(e.data for e in parse_sse(response.text) if e.name == "usage")
    (answered,) = logs.events("chat_answered")
    assert answered["request_id"] == "chat-req-1"
    assert answered["provider"] == "openai"
    assert answered["model"] == "gpt-4.1"
    assert answered["input_tokens"] == 1200
    assert answered["output_tokens"] == 300
    assert answered["cache_read_tokens"] == 1000
    assert answered["cost_usd"] == pytest.approx(usage["cost_usd"], abs=1e-6)
    assert answered["cost_usd"] > 0
    assert answered["first_token_ms"] >= 0
    assert answered["fallback"] is False
    (request,) = [r for r in logs.events("http_request") if r["route"] == "/api/chat"]
    assert request["request_id"] == "chat-req-1"
    assert request["status"] == 200


async def test_failed_chat_line_names_the_error(
    chat_settings: Settings, auth_mode: AuthMode, fake_openai: FakeOpenAI, logs: LogLines
) -> None:
    fake_openai.script(Reply(stall_after=0))
    settings = chat_settings.model_copy(update={"first_event_timeout_seconds": 0.3})
    async with app_client(settings) as client:
        await sign_in_for_mode(client, auth_mode)
        logs.clear()
        response = await client.post("/api/chat", json=chat_body())
    (failed,) = logs.events("chat_failed")
    assert failed["error"] == "provider_timeout"
    assert failed["provider"] == "openai"
    assert failed["first_token_ms"] is None
    assert failed["request_id"] == response.headers["X-Request-ID"]


async def test_sandbox_line_has_phases_and_outcome(
    chat_settings: Settings, auth_mode: AuthMode, logs: LogLines
) -> None:
    sandboxes = FakeSandboxes(delay=0.01)
    async with app_client(chat_settings, sandboxes=sandboxes) as client:
        await sign_in_for_mode(client, auth_mode)
        conversation = await a_conversation(client, "c-" + uuid.uuid4().hex[:8])
        fragment = {"template": "code-interpreter-v1", "code": "print(1)"}
        logs.clear()
        response = await client.post(
            "/api/sandbox", json={"fragment": fragment, "conversation_id": conversation}
        )
        assert response.status_code == 200, response.text
    (line,) = logs.events("sandbox_run")
    assert line["template"] == "code-interpreter-v1"
    assert line["backend"] == "local"
    assert line["outcome"] == "ok"
    assert line["acquiring_ms"] >= 0
    assert line["running_ms"] >= 5
    assert line["create_ms"] >= 0
    assert line["run_ms"] >= 5
    assert line["request_id"] == response.headers["X-Request-ID"]


def test_a_field_named_like_a_secret_is_redacted(logs: LogLines) -> None:
    log = structlog.get_logger("test")
    log.info("careless", password="hunter2", api_key="sk-live-1", input_tokens=7)
    (line,) = logs.events("careless")
    assert line["password"] == REDACTED
    assert line["api_key"] == REDACTED
    assert line["input_tokens"] == 7  # counts are not secrets
    assert "hunter2" not in logs.raw
    assert "sk-live-1" not in logs.raw


def test_uvicorn_access_lines_are_json_without_query_strings() -> None:
    config = stdlib_logging_config("info")
    config["handlers"]["stdout"]["stream"] = out = io.StringIO()
    previous = logging.getLogger("uvicorn.access").handlers[:]
    logging.config.dictConfig(config)
    try:
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/api/ws?token=eyJsecret", "1.1", 200
        )
        logging.getLogger("uvicorn.error").warning("something odd")
    finally:
        logging.getLogger("uvicorn.access").handlers[:] = previous
        logging.getLogger("uvicorn.error").handlers[:] = []
        logging.getLogger().handlers[:] = []
    access, error = (json.loads(line) for line in out.getvalue().splitlines())
    assert access["event"] == "http_access"
    assert access["path"] == "/api/ws"
    assert access["status"] == 200
    assert access["method"] == "GET"
    assert "eyJsecret" not in out.getvalue()
    assert error["event"] == "something odd"
    assert error["level"] == "warning"


def test_trace_id_is_added_when_a_span_is_active(logs: LogLines) -> None:
    trace = pytest.importorskip(
        "opentelemetry.trace", reason="opentelemetry-api is not installed (tracing adds it)"
    )
    context = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=False
    )
    with trace.use_span(trace.NonRecordingSpan(context)):
        structlog.get_logger("test").info("inside_span")
    structlog.get_logger("test").info("outside_span")
    (inside,) = logs.events("inside_span")
    (outside,) = logs.events("outside_span")
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert "trace_id" not in outside
