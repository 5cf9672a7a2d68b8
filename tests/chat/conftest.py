"""Chat test setup: one fake per protocol for the session, the app wired to them, SSE helpers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fragments.app import create_app
from fragments.config import Settings
from fragments.llm.types import ModelStreamer
from tests.apps import app_client as running_app
from tests.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, ServerThread
from tests.modes import AuthMode, mode_settings, sign_in_for_mode

PLATFORM_KEYS = {
    "openai": "platform-openai-key",
    "anthropic": "platform-anthropic-key",
    "google": "platform-google-key",
}


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture(scope="session")
def _anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture(scope="session")
def _gemini_server() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def fake_openai(_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    _openai_server.reset()
    yield _openai_server
    _openai_server.reset()


@pytest.fixture
def fake_anthropic(_anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    _anthropic_server.reset()
    yield _anthropic_server
    _anthropic_server.reset()


@pytest.fixture
def fake_gemini(_gemini_server: FakeGemini) -> Iterator[FakeGemini]:
    _gemini_server.reset()
    yield _gemini_server
    _gemini_server.reset()


@pytest.fixture
def chat_settings(
    auth_mode: AuthMode,
    data_dir: Path,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    fake_gemini: FakeGemini,
) -> Settings:
    """Platform keys and base URLs pointing at the fakes; short timeouts; no retries."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        openai_api_key=PLATFORM_KEYS["openai"],
        openai_base_url=fake_openai.base_url,
        anthropic_api_key=PLATFORM_KEYS["anthropic"],
        anthropic_base_url=fake_anthropic.base_url,
        google_api_key=PLATFORM_KEYS["google"],
        google_base_url=fake_gemini.base_url,
        ollama_base_url=fake_openai.base_url,
        mistral_api_key=None,
        groq_api_key=None,
        fireworks_api_key=None,
        together_api_key=None,
        xai_api_key=None,
        deepseek_api_key=None,
        partial_interval_seconds=0.02,
        first_event_timeout_seconds=2.0,
        stream_idle_timeout_seconds=2.0,
        provider_retries=0,
        # One provider per answer: tests/chat/test_failover.py turns the chain on.
        failover_chain="",
        # Chat tests send many guest requests from one address; test_rate_limits sets its own.
        rate_limit_guest_per_day=100_000,
        rate_limit_free_per_day=100_000,
        **mode_settings(auth_mode),  # type: ignore[arg-type]
    )


@asynccontextmanager
async def app_client(
    settings: Settings, *, llm: ModelStreamer | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an in-process client: anonymous while guests
    are allowed, signed in (a new account) when they are not. `llm`: a model streamer to use
    instead of the app's own (tests.fakes.streamer)."""
    async with running_app(settings, llm=llm) as c:
        await sign_in_for_mode(c, "guests" if settings.guests_allowed else "production")
        yield c


@pytest.fixture
async def client(chat_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The chat app's client: anonymous with guests on, signed in with them off."""
    async with app_client(chat_settings) as c:
        yield c


@pytest.fixture
def live_app(chat_settings: Settings) -> Iterator[ServerThread]:
    """The app on a real socket (ASGITransport buffers whole responses; timing and
    disconnects need a real server)."""
    with ServerThread(create_app(chat_settings), lifespan="on") as server:
        yield server


@pytest.fixture
def live_headers(live_app: ServerThread, auth_mode: AuthMode) -> dict[str, str]:
    """Headers a client of `live_app` sends: none with guests on, a new account's token off."""
    if auth_mode == "guests":
        return {}
    response = httpx.post(
        f"{live_app.url}/api/auth/signup",
        json={"email": f"live-{uuid.uuid4().hex[:8]}@example.com", "password": "long password"},
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


# ---- requests and SSE -------------------------------------------------------------------------


def chat_body(
    text: str = "Make a loan calculator",
    *,
    model: str = "gpt-4.1",
    provider: str | None = "openai",
    template: str = "auto",
    **extra: Any,
) -> dict[str, Any]:
    ref: dict[str, Any] = {"id": model}
    if provider is not None:
        ref["providerId"] = provider
    return {
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        "template": template,
        "model": ref,
        **extra,
    }


@dataclass
class Event:
    name: str
    data: Any
    at: float = 0.0  # seconds since the request started (live streams only)


def parse_sse(text: str) -> list[Event]:
    """Events of a complete SSE body; every data line must be one JSON value."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append(Event(name, json.loads("\n".join(data))))
    return events


async def post_chat(client: httpx.AsyncClient, body: Any) -> tuple[httpx.Response, list[Event]]:
    response = await client.post("/api/chat", json=body)
    events = parse_sse(response.text) if response.status_code == 200 else []
    return response, events


async def stream_live(url: str, body: Any, headers: dict[str, str] | None = None) -> list[Event]:
    """Read a live SSE stream, stamping each event with its arrival time."""
    events: list[Event] = []
    started = time.monotonic()
    async with (
        httpx.AsyncClient(timeout=30, headers=headers) as c,
        c.stream("POST", f"{url}/api/chat", json=body) as response,
    ):
        assert response.status_code == 200
        name, data = "message", []
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                events.append(Event(name, json.loads("\n".join(data)), time.monotonic() - started))
                name, data = "message", []
    return events


def names(events: list[Event]) -> list[str]:
    return [e.name for e in events]


def received_key(request: Any) -> str | None:
    """The API key a fake received, however the protocol carries it."""
    headers = request.headers
    if "x-goog-api-key" in headers:
        return str(headers["x-goog-api-key"])
    if "x-api-key" in headers:
        return str(headers["x-api-key"])
    auth = headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth else None
