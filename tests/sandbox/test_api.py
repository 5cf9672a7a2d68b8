"""POST /api/sandbox through the app (lifespan included), with the real local backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fragments.app import create_app
from fragments.config import Settings
from tests.modes import AuthMode, a_conversation, mode_settings, sign_in_for_mode

from .conftest import INTERPRETER

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(
    sandbox_settings: Settings, auth_mode: AuthMode
) -> AsyncIterator[httpx.AsyncClient]:
    """Anonymous with guests on; signed in in production mode (guests off, strict checks)."""
    app: FastAPI = create_app(sandbox_settings.model_copy(update=mode_settings(auth_mode)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await sign_in_for_mode(http, auth_mode)
            yield http


def body(code: str, **fields: Any) -> dict[str, Any]:
    fragment = {"template": INTERPRETER, "code": code, **fields.pop("fragment", {})}
    return {"fragment": fragment, **fields}


def parse_sse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


async def test_run_returns_the_interpreter_result(client: httpx.AsyncClient) -> None:
    code = "import matplotlib.pyplot as plt\nprint('hi')\nplt.plot([1, 2]); plt.show()\n{'a': 1}"
    response = await client.post("/api/sandbox", json=body(code))
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) == {"sandbox_id", "template", "stdout", "stderr", "error", "results"}
    assert data["template"] == INTERPRETER
    assert data["stdout"] == ["hi\n"]
    assert data["error"] is None
    chart, value = data["results"]
    assert set(chart) == {"png", "text", "is_main_result"}
    assert chart["png"].startswith("iVBOR")
    assert value == {"text": "{'a': 1}", "is_main_result": True}


async def test_json_results_use_the_json_key(client: httpx.AsyncClient) -> None:
    code = "from IPython.display import JSON, display\ndisplay(JSON({'k': [1, 2]}))"
    response = await client.post("/api/sandbox", json=body(code))
    [result] = response.json()["results"]
    assert result["json"] == {"k": [1, 2]}
    assert "json_" not in result


async def test_errors_come_back_with_name_value_and_traceback(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/sandbox", json=body("import nope"))
    error = response.json()["error"]
    assert error["name"] == "ModuleNotFoundError"
    assert error["value"] == "No module named 'nope'"
    assert "import nope" in error["traceback"]


async def test_a_conversation_keeps_its_sandbox(client: httpx.AsyncClient) -> None:
    c1, c2 = await a_conversation(client, "c1"), await a_conversation(client, "c2")
    first = await client.post("/api/sandbox", json=body("n = 7", conversation_id=c1))
    second = await client.post("/api/sandbox", json=body("print(n)", conversation_id=c1))
    other = await client.post("/api/sandbox", json=body("print(n)", conversation_id=c2))
    restarted = await client.post(
        "/api/sandbox", json=body("print(n)", conversation_id=c1, restart=True)
    )
    assert second.json()["stdout"] == ["7\n"]
    assert second.json()["sandbox_id"] == first.json()["sandbox_id"]
    assert other.json()["error"]["name"] == "NameError"
    assert restarted.json()["error"]["name"] == "NameError"
    assert restarted.json()["sandbox_id"] != first.json()["sandbox_id"]


async def test_sse_reports_phases_then_the_result(client: httpx.AsyncClient) -> None:
    conversation = await a_conversation(client, "sse")
    response = await client.post(
        "/api/sandbox",
        json=body("print(6 * 7)", conversation_id=conversation),
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["phase", "phase", "phase", "result"]
    assert [data["phase"] for _, data in events[:3]] == ["acquiring", "starting", "running"]
    assert events[-1][1]["stdout"] == ["42\n"]
    again = await client.post(
        "/api/sandbox",
        json=body("print(1)", conversation_id=conversation),
        headers={"Accept": "text/event-stream"},
    )
    assert [d.get("phase") for _, d in parse_sse(again.text)][:2] == ["acquiring", "running"]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (body("", fragment={"file_path": "/etc/passwd"}), 400, "invalid_path"),
        (body("", fragment={"file_path": "../x.py"}), 400, "invalid_path"),
        (
            body("", fragment={"files": [{"file_path": "a/../../x", "file_content": ""}]}),
            400,
            "invalid_path",
        ),
        (
            body("", fragment={"files": [{"file_path": "/abs.py", "file_content": ""}]}),
            400,
            "invalid_path",
        ),
        (body("", fragment={"file_path": "a\u0000b.py"}), 400, "invalid_path"),
        (body("1", fragment={"template": "cobol-developer"}), 400, "unknown_template"),
        (body("1", fragment={"template": ""}), 400, "unknown_template"),
        ({"fragment_id": "abc"}, 404, "not_found"),
        ({}, 400, "missing_fragment"),
        ({"fragment": "nope"}, 422, "invalid_request"),
    ],
)
async def test_bad_requests_are_clear(
    client: httpx.AsyncClient, payload: dict[str, Any], status: int, code: str
) -> None:
    response = await client.post("/api/sandbox", json=payload)
    assert response.status_code == status, response.text
    data = response.json()
    assert data["error"] == code
    assert isinstance(data["detail"], str)
    assert data["detail"].endswith(".")


async def test_empty_and_malformed_bodies(client: httpx.AsyncClient) -> None:
    empty = await client.post("/api/sandbox", headers={"Content-Type": "application/json"})
    assert empty.status_code == 400
    assert empty.json()["error"] == "empty_body"
    malformed = await client.post(
        "/api/sandbox", content=b'{"fragment": ', headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "malformed_json"


async def test_bad_requests_are_http_errors_even_when_streaming(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/sandbox",
        json=body("1", fragment={"template": "nope"}),
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unknown_template"


async def test_readyz_checks_the_sandbox_backend(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.json()["checks"]["sandbox"] == "ok"
