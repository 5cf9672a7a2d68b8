"""POST /api/sandbox/prepare: a conversation's sandbox is made ready while its fragment is
still being written (Streamlit serving its placeholder), only for the conversation's owner, once
per conversation; the fragment's run then edits that sandbox in place (no second start) and the
page already open renders the new app. A prepare counts as a sandbox run, and pays for the run
that follows it in its conversation."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.typing import Subprotocol

from fragments.app import create_app, state_of
from fragments.config import Settings
from fragments.quota.credits import PrepareCredits
from fragments.sandbox.e2b import E2BSandboxService
from fragments.sandbox.local.build import TemplateEnv, build_template
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.templates import get_template
from fragments.schemas import Fragment, WebResult
from tests.accounts import bearer, sign_up
from tests.fakes.e2b_sdk import FakeCloud
from tests.fakes.sandboxes import FakeSandboxes
from tests.modes import mode_of, sign_in_for_mode

pytestmark = pytest.mark.anyio

STREAMLIT = "streamlit-developer"
# A Streamlit BackMsg asking for a script run (`rerun_script` with an empty ClientState).
RERUN = b"Z\x00"


@pytest.fixture(scope="session")
def streamlit_env() -> TemplateEnv:
    return build_template(Settings(_env_file=None), STREAMLIT)


@pytest.fixture
async def app(
    db_settings: Settings, sandbox_settings: Settings, streamlit_env: TemplateEnv
) -> AsyncIterator[FastAPI]:
    sandbox_fields = {
        name: getattr(sandbox_settings, name)
        for name in Settings.model_fields
        if name.startswith("sandbox_")
    }
    app = create_app(db_settings.model_copy(update=sandbox_fields))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def api(app: FastAPI, db_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await sign_in_for_mode(client, mode_of(db_settings))
        yield client


def _service(app: FastAPI) -> LocalSandboxService:
    service = state_of(app).sandboxes
    assert isinstance(service, LocalSandboxService)
    return service


async def _owner_with_conversation(api: httpx.AsyncClient, name: str) -> tuple[dict[str, str], str]:
    account = await sign_up(api, name)
    headers = bearer(account.access_token)
    conversation = (await api.post("/api/conversations", json={}, headers=headers)).json()
    return headers, str(conversation["id"])


async def _until_marker(ws: ClientConnection, marker: str) -> None:
    async with asyncio.timeout(30):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes) and marker.encode() in message:
                return


async def test_a_prepared_streamlit_sandbox_is_edited_in_place_by_the_run(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    headers, conversation = await _owner_with_conversation(api, "alice")
    ask = {"template": STREAMLIT, "conversation_id": conversation}
    prepared = await api.post("/api/sandbox/prepare", json=ask, headers=headers)
    assert prepared.status_code == 200, prepared.text
    body = prepared.json()
    assert set(body) == {"sandbox_id", "template", "url"}
    assert body["template"] == STREAMLIT
    assert body["url"].endswith(
        f"-{body['sandbox_id']}.{state_of(app).settings.resolved_preview_domain}/"
    )
    # Idempotent: the same sandbox, not started again.
    again = await api.post("/api/sandbox/prepare", json=ask, headers=headers)
    assert again.json() == body
    service = _service(app)
    [sandbox] = service.sandboxes
    assert isinstance(sandbox, WebSandbox)
    assert sandbox.id == body["sandbox_id"]
    assert sandbox.starts == 1

    marker = f"prepared-{secrets.token_hex(3)}"
    async with unix_connect(
        str(sandbox.socket),
        f"ws://127.0.0.1:{sandbox.port}/_stcore/stream",
        subprotocols=[Subprotocol("streamlit")],
    ) as ws:
        # The page is open on the placeholder while the model writes ...
        await ws.send(RERUN)
        fragment = {
            "template": STREAMLIT,
            "code": f"import streamlit as st\nst.title('{marker}')\n",
        }
        ran = await api.post(
            "/api/sandbox",
            json={"fragment": fragment, "conversation_id": conversation},
            headers=headers,
        )
        assert ran.status_code == 200, ran.text
        assert ran.json()["sandbox_id"] == body["sandbox_id"]
        assert ran.json()["url"] == body["url"]
        # ... and the open session reruns the new app by itself.
        await _until_marker(ws, marker)
    assert sandbox.starts == 1
    assert service.sandboxes == [sandbox]
    # After a run, preparing again keeps the app that ran (no placeholder over it).
    kept = await api.post("/api/sandbox/prepare", json=ask, headers=headers)
    assert kept.json() == body
    assert sandbox.starts == 1


async def test_only_the_owner_prepares_a_conversation(app: FastAPI, api: httpx.AsyncClient) -> None:
    _, conversation = await _owner_with_conversation(api, "alice")
    mallory, _ = await _owner_with_conversation(api, "mallory")
    refused = await api.post(
        "/api/sandbox/prepare",
        json={"template": STREAMLIT, "conversation_id": conversation},
        headers=mallory,
    )
    assert refused.status_code == 404
    assert _service(app).sandboxes == []


@pytest.mark.parametrize(
    ("ask", "code"),
    [
        ({"template": "cobol-developer", "conversation_id": "c1"}, "unknown_template"),
        ({"template": "auto", "conversation_id": "c1"}, "unknown_template"),
        ({"conversation_id": "c1"}, "missing_template"),
        ({"template": STREAMLIT}, "missing_conversation"),
    ],
)
async def test_a_bad_prepare_is_a_400(
    app: FastAPI, api: httpx.AsyncClient, ask: dict[str, Any], code: str
) -> None:
    response = await api.post("/api/sandbox/prepare", json=ask)
    assert response.status_code == 400
    assert response.json()["error"] == code
    assert _service(app).sandboxes == []


def test_a_credit_pays_for_one_run_of_its_template() -> None:
    credits = PrepareCredits(limit=2)
    credits.grant("a", STREAMLIT)
    assert credits.holds("a", STREAMLIT)
    assert not credits.use("a", "gradio-developer")  # another template: counted, credit gone
    assert not credits.use("a", STREAMLIT)
    credits.grant("a", STREAMLIT)
    assert credits.use("a", STREAMLIT)
    assert not credits.use("a", STREAMLIT)  # spent
    for owner in ("x", "y", "z"):
        credits.grant(owner, STREAMLIT)
    assert not credits.holds("x", STREAMLIT)  # the oldest was dropped past the limit
    assert credits.holds("z", STREAMLIT)


@pytest.mark.auth_modes("guests")  # counts an anonymous guest's runs by IP
async def test_a_prepare_counts_as_the_run_that_follows_it(db_settings: Settings) -> None:
    """The limit is about sandboxes, not this test's Streamlit: the service is a stand-in."""
    limited = db_settings.model_copy(update={"sandbox_limit_guest_per_day": 3})
    app = create_app(limited, sandboxes=FakeSandboxes())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            ask = {"template": STREAMLIT, "conversation_id": "c1"}
            run = {"fragment": {"template": STREAMLIT, "code": "x = 1"}, "conversation_id": "c1"}
            first = await api.post("/api/sandbox/prepare", json=ask)
            assert first.headers["x-ratelimit-remaining"] == "2"
            # A repeat and the run it prepared for are paid for already.
            assert (await api.post("/api/sandbox/prepare", json=ask)).status_code == 200
            assert (await api.post("/api/sandbox", json=run)).status_code == 200
            # The next run of the conversation is counted as usual.
            second = await api.post("/api/sandbox", json=run)
            assert second.headers["x-ratelimit-remaining"] == "1"
            # Preparing other conversations is never free: it runs into the limit.
            assert (
                await api.post("/api/sandbox/prepare", json={**ask, "conversation_id": "c2"})
            ).status_code == 200
            over = await api.post("/api/sandbox/prepare", json={**ask, "conversation_id": "c3"})
            assert over.status_code == 429


async def test_e2b_prepares_the_owners_sandbox_that_the_run_then_uses(
    settings: Settings, tmp_path: Path
) -> None:
    cloud = FakeCloud(tmp_path / "e2b", api_key="e2b_test_key")
    e2b = settings.model_copy(
        update={"sandbox_backend": "e2b", "e2b_api_key": SecretStr("e2b_test_key")}
    )
    service = E2BSandboxService(e2b, sdk=cloud.sdk)  # type: ignore[arg-type]
    try:
        template = get_template("nextjs-developer")
        prepared = await service.prepare(template, "alice:c1")
        assert prepared is not None
        assert prepared.url == f"https://3000-{prepared.sandbox_id}.e2b.app"
        assert await service.prepare(template, "alice:c1") == prepared
        assert cloud.sandboxes[prepared.sandbox_id].metadata["owner"] == "alice:c1"
        code = "export default () => null"
        result = await service.execute(
            Fragment(template=template.id, code=code, file_path="pages/index.tsx"),
            owner="alice:c1",
        )
        assert isinstance(result, WebResult)
        assert (result.sandbox_id, result.url) == (prepared.sandbox_id, prepared.url)
        assert cloud.creates == 1
    finally:
        await service.aclose()
        await cloud.aclose()
