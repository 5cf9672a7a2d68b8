"""The app shell: health, catalogues, error shape, body limits, security headers."""

from __future__ import annotations

import json

import httpx
import pytest

from fragments.app import create_app
from fragments.config import Settings
from fragments.llm.providers import PROVIDERS
from fragments.sandbox.templates import TEMPLATES


@pytest.fixture
def client(settings: Settings) -> httpx.Client:
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings)) as c:
        yield c  # type: ignore[misc]


def test_healthz_answers(client: httpx.Client) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_models_cover_every_provider(client: httpx.Client) -> None:
    models = client.get("/api/models").json()
    providers = {m["providerId"] for m in models}
    # Every provider record has models in the catalogue, and no model names an unknown one.
    assert providers == set(PROVIDERS)
    for m in models:
        assert set(m) == {"id", "name", "provider", "providerId", "multiModal"}
        assert isinstance(m["multiModal"], bool)


def test_templates_registry_is_served(client: httpx.Client) -> None:
    body = client.get("/api/templates").json()
    assert list(body) == list(TEMPLATES)
    assert body["code-interpreter-v1"]["file"] == "script.py"
    assert body["nextjs-developer"]["port"] == 3000
    assert body["vue-developer"]["file"] == "app/app.vue"
    assert body["streamlit-developer"]["port"] == 8501
    assert body["gradio-developer"]["port"] == 7860
    assert "demo" in body["gradio-developer"]["instructions"]


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    resp = client.get("/api/nothing-here")
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"
    assert isinstance(resp.json()["detail"], str)


def test_announced_oversized_body_is_413(client: httpx.Client, settings: Settings) -> None:
    resp = client.post(
        "/api/chat",
        content=b"{}",
        headers={
            "content-length": str(settings.max_body_bytes + 1),
            "content-type": "application/json",
        },
    )
    assert resp.status_code == 413
    assert resp.json()["error"] == "payload_too_large"


def test_streamed_oversized_body_is_413(client: httpx.Client, settings: Settings) -> None:
    chunk = b"x" * (1024 * 1024)

    def body():  # type: ignore[no-untyped-def]
        for _ in range(settings.max_body_bytes // len(chunk) + 2):
            yield chunk

    resp = client.post("/api/chat", content=body(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert "MB" in resp.json()["detail"]


def test_pages_carry_a_tight_csp(client: httpx.Client) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-src http://*.localhost:8000" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_readyz_reports_checks(client: httpx.Client) -> None:
    resp = client.get("/readyz")
    assert resp.status_code in (200, 503)
    body = resp.json()
    assert "sandbox" in body["checks"]
    if resp.status_code == 503:
        assert resp.headers["retry-after"]
        assert json.dumps(body["detail"])
