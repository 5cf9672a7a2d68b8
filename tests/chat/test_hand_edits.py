"""Code edited by hand (POST /api/conversations/{id}/versions) becomes the current version the
next model turn starts from; bad input gets a clear error and loses nothing. Both auth modes,
SQLite and PostgreSQL; the model is the fake OpenAI server at the wire."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fragments.config import Settings
from tests.accounts import Account, bearer, sign_up
from tests.chat.conftest import app_client, chat_body, parse_sse
from tests.conftest import Backend, database_settings
from tests.databases import PgDatabase
from tests.fakes import FakeOpenAI, FragmentReply
from tests.modes import anonymous

pytestmark = pytest.mark.anyio

EDITED = 'print("edited by hand")\n'


@pytest.fixture
async def client(
    chat_settings: Settings, backend: Backend, pg_database: PgDatabase | None
) -> AsyncIterator[httpx.AsyncClient]:
    settings = chat_settings.model_copy(
        update={**database_settings(backend, pg_database), "edit_max_bytes": 4096}
    )
    async with app_client(settings) as c:
        yield c


def fragment(code: str, **extra: Any) -> dict[str, Any]:
    return {
        "commentary": "A script.",
        "template": "code-interpreter-v1",
        "title": "Script",
        "description": "A script.",
        "additional_dependencies": [],
        "has_additional_dependencies": False,
        "install_dependencies_command": "",
        "port": None,
        "file_path": "script.py",
        "code": code,
        **extra,
    }


async def first_turn(client: httpx.AsyncClient, who: Account) -> tuple[str, str]:
    """A conversation with one model answer: (conversation id, its fragment id)."""
    response = await client.post("/api/chat", json=chat_body("A script"), headers=who.headers)
    assert response.status_code == 200, response.text
    done = parse_sse(response.text)[-1]
    assert done.name == "done", response.text
    return str(done.data["conversation_id"]), str(done.data["fragment_id"])


def error_of(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["detail"], str), body
    assert body["detail"], body
    assert body["error"] == code, body


async def versions(client: httpx.AsyncClient, who: Account, cid: str) -> dict[str, Any]:
    response = await client.get(f"/api/conversations/{cid}/versions", headers=who.headers)
    assert response.status_code == 200, response.text
    listed: dict[str, Any] = response.json()
    return listed


async def test_the_next_turn_starts_from_the_hand_edit(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply(fragment('print("model")\n')), FragmentReply())
    alice = await sign_up(client, "alice")
    cid, model_version = await first_turn(client, alice)

    edit = {"fragment": fragment(EDITED), "based_on": model_version, "turn_id": "edit-1"}
    saved = await client.post(
        f"/api/conversations/{cid}/versions", json=edit, headers=alice.headers
    )
    assert saved.status_code == 201, saved.text
    body = saved.json()
    assert (body["version"], body["edited_from"]) == (2, 1)
    assert body["fragment"]["code"] == EDITED
    assert body["message"]["content"][0]["text"] == "Edited the code by hand (from version 1)"
    # A retried save (same turn id, the reply was lost) stores nothing more.
    again = await client.post(
        f"/api/conversations/{cid}/versions", json=edit, headers=alice.headers
    )
    assert again.status_code == 201, again.text
    assert again.json()["fragment_id"] == body["fragment_id"]

    listed = await versions(client, alice, cid)
    assert listed["current"] == body["fragment_id"]
    assert [(v["version"], v["source"], v["edited_from"]) for v in listed["items"]] == [
        (1, "model", None),
        (2, "user", 1),
    ]

    # The next turn sends only the new message: the stored history ends with the edit, and
    # the model is given the edited code as the current version.
    response = await client.post(
        "/api/chat",
        json=chat_body("Now print it twice", conversation_id=cid),
        headers=alice.headers,
    )
    assert response.status_code == 200, response.text
    assert parse_sse(response.text)[-1].name == "done"
    sent = fake_openai.requests[-1].json["messages"]
    last = json.dumps(sent[-1]["content"])
    assert sent[-1]["role"] == "user"
    assert "Now print it twice" in last
    assert "edited by hand" in last
    assert 'print(\\"model\\")' not in last
    # The earlier exchange tells the model the code was edited by hand.
    assert "Edited the code by hand (from version 1)" in json.dumps(sent[:-1])
    listed = await versions(client, alice, cid)
    assert [v["version"] for v in listed["items"]] == [1, 2, 3]


async def test_bad_hand_edits_get_clear_errors_and_lose_nothing(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply(fragment('print("model")\n')), FragmentReply())
    alice = await sign_up(client, "alice")
    mallory = await sign_up(client, "mallory")
    cid, fid = await first_turn(client, alice)
    _, mallory_fid = await first_turn(client, mallory)
    url = f"/api/conversations/{cid}/versions"
    before = await versions(client, alice, cid)

    async def post(body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return await client.post(url, json=body, headers=headers or alice.headers)

    # Oversized: the code alone, or spread over many files (the limit is 4 KB in this app).
    error_of(await post({"fragment": fragment("x" * 5000)}), 413, "edit_too_large")
    many = [{"file_path": f"f{i}.py", "file_content": "y" * 500} for i in range(10)]
    error_of(await post({"fragment": fragment("", files=many)}), 413, "edit_too_large")
    # Malformed JSON, a body that breaks the schema, a fragment that cannot run.
    malformed = await client.post(
        url,
        content=b'{"fragment": {"code": ',
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    error_of(malformed, 400, "malformed_json")
    error_of(await post({"fragment": "print(1)"}), 422, "invalid_request")
    error_of(await post({}), 422, "invalid_request")
    error_of(await post({"fragment": fragment(EDITED, port="eighty")}), 422, "invalid_request")
    error_of(await post({"fragment": fragment(EDITED, template="nope")}), 400, "unknown_template")
    error_of(await post({"fragment": fragment("   \n")}), 400, "empty_code")
    for path in ("../escape.py", "/etc/passwd", "a/../../b.py", "bad\x00.py"):
        error_of(await post({"fragment": fragment(EDITED, file_path=path)}), 400, "invalid_path")
    files = [{"file_path": "../../x.js", "file_content": "1"}]
    error_of(await post({"fragment": fragment("", files=files)}), 400, "invalid_path")
    # Another team's conversation, or its version named as the base of an edit: 404.
    error_of(await post({"fragment": fragment(EDITED)}, mallory.headers), 404, "not_found")
    edit = {"fragment": fragment(EDITED), "based_on": mallory_fid}
    error_of(await post(edit), 404, "not_found")
    # A turn id that already names a model's turn is not taken over.
    detail = (await client.get(f"/api/conversations/{cid}", headers=alice.headers)).json()
    assert detail["messages"][1]["fragment_id"] == fid
    # Forged, or no token at all (an anonymous guest stores nothing, so cannot edit a version).
    forged = alice.access_token[:-4] + (
        "AAAA" if not alice.access_token.endswith("AAAA") else "BBBB"
    )
    error_of(await post({"fragment": fragment(EDITED)}, bearer(forged)), 401, "invalid_token")
    response = await client.post(url, json={"fragment": fragment(EDITED)}, headers=anonymous())
    assert response.status_code == 401, response.text

    # Nothing was stored, nothing of Alice's changed.
    assert await versions(client, alice, cid) == before
    after = (await client.get(f"/api/conversations/{cid}", headers=alice.headers)).json()
    assert after["messages"] == detail["messages"]


async def test_a_turn_id_of_a_model_turn_is_refused(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply())
    alice = await sign_up(client, "alice")
    response = await client.post(
        "/api/chat", json=chat_body("A script", turn_id="model-turn"), headers=alice.headers
    )
    cid = parse_sse(response.text)[-1].data["conversation_id"]
    edit = {"fragment": fragment(EDITED), "turn_id": "model-turn"}
    refused = await client.post(
        f"/api/conversations/{cid}/versions", json=edit, headers=alice.headers
    )
    error_of(refused, 409, "turn_id_taken")
    listed = await versions(client, alice, cid)
    assert [(v["version"], v["source"]) for v in listed["items"]] == [(1, "model")]
