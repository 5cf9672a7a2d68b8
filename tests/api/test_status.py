"""`GET /api/status`: public in both auth modes, the providers' shared health checks, the
breakers and the sandbox backend, and never a key or a URL with credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from fragments.app import create_app, state_of
from fragments.config import Settings
from fragments.sandbox.service import SandboxUnavailable
from tests.fakes import ErrorReply, FakeAnthropic, FakeOpenAI
from tests.fakes.sandboxes import FakeSandboxes
from tests.fakes.streamer import FakeStreamer
from tests.modes import AuthMode, anonymous, mode_settings, sign_in_for_mode

pytestmark = pytest.mark.anyio

OPENAI_KEY = "sk-status-secret-openai"
ANTHROPIC_KEY = "sk-ant-status-secret"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeAnthropic]]:
    with FakeOpenAI() as openai, FakeAnthropic() as anthropic:
        yield openai, anthropic


class BrokenSandboxes(FakeSandboxes):
    async def check(self) -> None:
        raise SandboxUnavailable("the sandbox host at http://admin:hunter2@10.0.0.1 is down")


async def test_status_is_public_and_tells_no_secrets(
    settings: Settings, auth_mode: AuthMode, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai, anthropic = fakes
    anthropic.models_reply = ErrorReply(529, "overloaded")
    # A base URL carrying credentials: neither it nor its parts may be shown.
    openai_url = openai.base_url.replace("http://", "http://proxyuser:proxypass@")
    configured = settings.model_copy(
        update={
            "openai_api_key": SecretStr(OPENAI_KEY),
            "openai_base_url": openai_url,
            "anthropic_api_key": SecretStr(ANTHROPIC_KEY),
            "anthropic_base_url": anthropic.base_url,
            **mode_settings(auth_mode),
        }
    )
    app = create_app(configured, sandboxes=FakeSandboxes(), llm=FakeStreamer())
    async with app.router.lifespan_context(app):
        state = state_of(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await sign_in_for_mode(client, auth_mode)
            deadline = time.monotonic() + 20
            for _ in range(400):  # the first round runs at start-up
                if len(await state.health.all()) == 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            state.breakers.breaker("provider:openai")
            tripped = state.breakers.breaker("sandbox:local")
            for _ in range(configured.breaker_failures):
                await tripped.record_failure(await tripped.allow())
            for headers in ({}, anonymous()):  # signed in (production) and nobody
                response = await client.get("/api/status", headers=headers)
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["providers"] == [
                    {
                        "provider": "anthropic",
                        "status": "down",
                        "latency_ms": body["providers"][0]["latency_ms"],
                        "checked_at": body["providers"][0]["checked_at"],
                    },
                    {
                        "provider": "openai",
                        "status": "up",
                        "latency_ms": body["providers"][1]["latency_ms"],
                        "checked_at": body["providers"][1]["checked_at"],
                    },
                ]
                assert body["breakers"] == [
                    {"name": "provider:openai", "state": "closed"},
                    {"name": "sandbox:local", "state": "open"},
                ]
                assert body["sandbox"] == {"backend": "local", "status": "down"}
                assert body["fleet"] is None  # this app runs its own sandboxes
                for secret in (OPENAI_KEY, ANTHROPIC_KEY, "proxyuser", "proxypass", "127.0.0.1"):
                    assert secret not in response.text
                assert "HTTP 529" not in response.text  # errors stay in the logs


async def test_a_failing_backend_check_is_down_without_its_reason(
    settings: Settings, auth_mode: AuthMode
) -> None:
    configured = settings.model_copy(update=mode_settings(auth_mode))
    app = create_app(configured, sandboxes=BrokenSandboxes(), llm=FakeStreamer())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/api/status")
            assert response.status_code == 200
            assert response.json() == {
                "providers": [],  # no platform key: nothing is checked
                "breakers": [],
                "sandbox": {"backend": "local", "status": "down"},
                "fleet": None,
            }
            assert "hunter2" not in response.text
