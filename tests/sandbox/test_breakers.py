"""Circuit breakers on sandbox creation: after N failed creations a run fails fast into its
fallback (the web template's "no live preview" answer, the interpreter's clear 503) without
trying to create anything; after the open period one probe creates again and closes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from fragments.config import Settings
from fragments.resilience import BreakerConfig, BreakerRegistry
from fragments.sandbox.e2b import E2BSandboxService
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.service import SandboxUnavailable
from fragments.schemas import Fragment, InterpreterResult, WebResult
from tests.fakes.e2b_sdk import FakeCloud
from tests.fakes.server import ServerThread

pytestmark = pytest.mark.anyio

KEY = "e2b_test_key"
OPEN = 0.5


def fragment(code: str, template: str = "code-interpreter-v1") -> Fragment:
    return Fragment.model_validate({"template": template, "code": code})


def breaker_settings(settings: Settings, **more: Any) -> Settings:
    return settings.model_copy(
        update={
            "breaker_failures": 2,
            "breaker_open_seconds": OPEN,
            "sandbox_start_retries": 0,
            "sandbox_retry_backoff_seconds": 0.01,
            **more,
        }
    )


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[FakeCloud]:
    fake = FakeCloud(tmp_path / "e2b", api_key=KEY)
    try:
        yield fake
    finally:
        await fake.aclose()


@pytest.fixture
async def e2b(settings: Settings, cloud: FakeCloud) -> AsyncIterator[E2BSandboxService]:
    configured = breaker_settings(settings, sandbox_backend="e2b", e2b_api_key=SecretStr(KEY))
    svc = E2BSandboxService(configured, sdk=cloud.sdk)  # type: ignore[arg-type]
    try:
        yield svc
    finally:
        await svc.aclose()


async def test_e2b_creation_failures_open_the_breaker_then_a_probe_recovers(
    e2b: E2BSandboxService, cloud: FakeCloud
) -> None:
    cloud.fail_creates = 100
    web = fragment("import streamlit as st", "streamlit-developer")
    for n in range(2):
        failed = await e2b.execute(web, owner=f"user:{n}")
        assert isinstance(failed, WebResult)
        assert failed.error is not None
        assert "could not be created" in failed.error.value
    assert cloud.creates == 2
    assert await e2b.breaker.state() == "open"
    # Open: the fallback at once, no creation tried.
    fallback = await e2b.execute(web, owner="user:2")
    assert isinstance(fallback, WebResult)
    assert fallback.model_dump(include={"sandbox_id", "url"}) == {"sandbox_id": None, "url": None}
    assert fallback.template == "streamlit-developer"
    assert fallback.error is not None
    assert "cannot be created right now" in fallback.error.value
    with pytest.raises(SandboxUnavailable) as caught:
        await e2b.execute(fragment("1"), owner="user:3")
    assert "cannot be created right now" in caught.value.detail
    assert caught.value.headers["Retry-After"] == "1"
    assert cloud.creates == 2
    # E2B recovers; after the open period one probe creates, and the breaker closes.
    cloud.fail_creates = 0
    await asyncio.sleep(OPEN + 0.1)
    assert await e2b.breaker.state() == "half_open"
    result = await e2b.execute(fragment("print('back')"), owner="user:4")
    assert isinstance(result, InterpreterResult)
    assert result.stdout == ["back\n"]
    assert await e2b.breaker.state() == "closed"


async def test_a_failed_probe_keeps_the_fallback(e2b: E2BSandboxService, cloud: FakeCloud) -> None:
    cloud.fail_creates = 100
    web = fragment("import streamlit as st", "streamlit-developer")
    for n in range(2):
        await e2b.execute(web, owner=f"user:{n}")
    await asyncio.sleep(OPEN + 0.1)
    probe = await e2b.execute(web, owner="user:probe")
    assert isinstance(probe, WebResult)
    assert cloud.creates == 3  # the probe tried
    assert await e2b.breaker.state() == "open"
    again = await e2b.execute(web, owner="user:after")
    assert isinstance(again, WebResult)
    assert again.error is not None
    assert "cannot be created right now" in again.error.value
    assert cloud.creates == 3


async def test_the_factory_uses_the_apps_breaker(settings: Settings, cloud: FakeCloud) -> None:
    from fragments.sandbox import factory

    configured = breaker_settings(settings, sandbox_backend="e2b", e2b_api_key=SecretStr(KEY))
    registry = BreakerRegistry(BreakerConfig(failures=2, open_seconds=OPEN))
    svc = await factory.create_sandbox_service(configured, registry)
    try:
        assert isinstance(svc, E2BSandboxService)
        assert svc.breaker is registry.breaker("sandbox:e2b")
    finally:
        await svc.aclose()


async def test_local_start_failures_open_the_breaker_then_a_probe_recovers(
    sandbox_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher itself is made to fail (as test_service.py does for retries)."""
    from fragments.sandbox.local.kernel import KernelSandbox
    from fragments.sandbox.local.sandbox_base import SandboxStartError

    svc = LocalSandboxService(breaker_settings(sandbox_settings))
    launches: list[str] = []
    real_start = KernelSandbox.start
    broken = True

    async def start(self: KernelSandbox) -> None:
        launches.append(self.id)
        if broken:
            raise SandboxStartError("launcher failed")
        await real_start(self)

    monkeypatch.setattr(KernelSandbox, "start", start)
    try:
        for n in range(2):
            with pytest.raises(SandboxUnavailable, match="launcher failed"):
                await svc.execute(fragment("1"), owner=f"user:{n}")
        assert len(launches) == 2
        assert await svc.breaker.state() == "open"
        with pytest.raises(SandboxUnavailable, match="cannot be started right now") as caught:
            await svc.execute(fragment("1"), owner="user:2")
        assert caught.value.status_code == 503
        assert len(launches) == 2  # failed fast: no launch
        broken = False
        await asyncio.sleep(OPEN + 0.1)
        result = await svc.execute(fragment("print('back')"), owner="user:3")
        assert isinstance(result, InterpreterResult)
        assert result.stdout == ["back\n"]
        assert await svc.breaker.state() == "closed"
    finally:
        await svc.aclose()


# ---- E2B readiness: a real, authenticated call ---------------------------------------------


async def test_check_asks_e2b_and_keeps_its_verdict_briefly(
    e2b: E2BSandboxService, cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fragments.sandbox.e2b import service as e2b_service

    await e2b.check()
    cloud.api_key = "rotated"  # the platform's key is no longer accepted
    await e2b.check()  # the verdict is kept a few seconds
    monkeypatch.setattr(e2b_service, "CHECK_SECONDS", 0.0)
    with pytest.raises(SandboxUnavailable, match="AuthenticationException"):
        await e2b.check()


async def fake_e2b_api(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """E2B's control API, as much as readiness needs: `GET /v2/sandboxes`, keyed."""
    if scope["type"] != "http":
        return
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    seen.append((scope["method"], scope["path"], headers.get("x-api-key")))
    if scope["path"] != "/v2/sandboxes":
        status, body = 404, b'{"code": 404, "message": "not found"}'
    elif headers.get("x-api-key") != KEY:
        status, body = 401, b'{"code": 401, "message": "Invalid API key"}'
    else:
        status, body = 200, b"[]"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


seen: list[tuple[str, str, str | None]] = []


async def test_check_with_the_real_sdk_at_the_wire(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real SDK's list call reaches a fake E2B API over HTTP with the key; a refused key
    makes the backend unavailable."""
    from fragments.sandbox.e2b import service as e2b_service

    monkeypatch.setattr(e2b_service, "CHECK_SECONDS", 0.0)
    seen.clear()
    with ServerThread(fake_e2b_api) as server:
        monkeypatch.setenv("E2B_API_URL", server.url)
        for key, ok in ((KEY, True), ("wrong", False)):
            configured = settings.model_copy(
                update={"sandbox_backend": "e2b", "e2b_api_key": SecretStr(key)}
            )
            svc = E2BSandboxService(configured)
            try:
                if ok:
                    await svc.check()
                else:
                    with pytest.raises(SandboxUnavailable):
                        await svc.check()
            finally:
                await svc.aclose()
    assert [(m, p, k) for m, p, k in seen] == [
        ("GET", "/v2/sandboxes", KEY),
        ("GET", "/v2/sandboxes", "wrong"),
    ]


async def test_readyz_reports_e2b_down(
    settings: Settings, cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fragments.app import create_app
    from fragments.sandbox.e2b import service as e2b_service

    monkeypatch.setattr(e2b_service, "real_sdk", lambda: cloud.sdk)
    monkeypatch.setattr(e2b_service, "CHECK_SECONDS", 0.0)
    configured = settings.model_copy(
        update={"sandbox_backend": "e2b", "e2b_api_key": SecretStr(KEY)}
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/readyz")).status_code == 200
            cloud.api_key = "rotated"
            down = await http.get("/readyz")
            assert down.status_code == 503
            assert "E2B does not answer" in down.json()["checks"]["sandbox"]


async def test_local_web_run_answers_no_live_preview_while_open(
    sandbox_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the API: a Streamlit run whose sandbox cannot launch answers the no-preview
    shape; once the breaker is open the same shape comes at once, without a launch."""
    from fragments.app import create_app, state_of
    from fragments.sandbox.local.build import build_template
    from fragments.sandbox.local.sandbox_base import SandboxStartError
    from fragments.sandbox.local.web import WebSandbox

    build_template(Settings(_env_file=None), "streamlit-developer")  # type: ignore[call-arg]
    launches: list[str] = []

    async def start(self: WebSandbox) -> None:
        launches.append(self.id)
        raise SandboxStartError("launcher failed")

    monkeypatch.setattr(WebSandbox, "start", start)
    configured = breaker_settings(sandbox_settings, breaker_failures=1, breaker_open_seconds=60)
    app = create_app(configured)
    body = {"fragment": {"template": "streamlit-developer", "code": "import streamlit as st"}}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            first = await http.post("/api/sandbox", json=body)
            assert first.status_code == 200, first.text
            assert first.json()["error"]["value"] == "launcher failed"
            assert len(launches) == 1
            fallback = await http.post("/api/sandbox", json=body)
            assert fallback.status_code == 200
            data = fallback.json()
            assert {k: data[k] for k in ("sandbox_id", "template", "url")} == {
                "sandbox_id": None,
                "template": "streamlit-developer",
                "url": None,
            }
            assert data["error"]["name"] == "SandboxStartError"
            assert "cannot be started right now" in data["error"]["value"]
            assert len(launches) == 1  # failed fast
            status = (await http.get("/api/status")).json()
            assert {"name": "sandbox:local", "state": "open"} in status["breakers"]
            assert status["sandbox"] == {"backend": "local", "status": "down"}
        assert await state_of(app).breakers.breaker("sandbox:local").state() == "open"
