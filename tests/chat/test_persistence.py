"""Chat turns are stored as they complete, on SQLite and PostgreSQL; nobody chats into or runs
another user's conversation or fragment."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fragments.config import Settings
from tests.accounts import Account, sign_up
from tests.chat.conftest import app_client, chat_body, names, parse_sse
from tests.conftest import Backend, database_settings
from tests.databases import PgDatabase
from tests.fakes import FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(
    chat_settings: Settings, backend: Backend, pg_database: PgDatabase | None
) -> AsyncIterator[httpx.AsyncClient]:
    settings = chat_settings.model_copy(update=database_settings(backend, pg_database))
    async with app_client(settings) as c:
        yield c


async def chat(
    client: httpx.AsyncClient, account: Account | None, text: str = "Make a counter", **extra: Any
) -> tuple[httpx.Response, dict[str, Any]]:
    headers = account.headers if account else {}
    response = await client.post("/api/chat", json=chat_body(text, **extra), headers=headers)
    if response.status_code != 200:
        return response, {}
    events = parse_sse(response.text)
    assert names(events)[-1] == "done", names(events)
    return response, dict(events[-1].data)


async def test_turns_are_saved_and_restored(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply(), FragmentReply())
    alice = await sign_up(client, "alice")
    _, done = await chat(client, alice, "Make a loan calculator")
    assert done["saved"] is True
    conversation_id = done["conversation_id"]
    first_fragment = done["fragment_id"]
    _, again = await chat(client, alice, "Now in blue", conversation_id=conversation_id)
    assert again["saved"] is True
    assert again["conversation_id"] == conversation_id

    detail = await client.get(f"/api/conversations/{conversation_id}", headers=alice.headers)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 2
    assert body["messages"][0]["content"][0]["text"] == "Make a loan calculator"
    assert body["messages"][1]["fragment_id"] == first_fragment
    assert body["messages"][1]["object"]["code"]
    assert [f["version"] for f in body["fragments"]] == [1, 2]
    assert body["fragments"][1]["id"] == again["fragment_id"]
    assert body["title"]
    assert body["latest_result"] is None
    listing = (await client.get("/api/conversations", headers=alice.headers)).json()
    assert [c["id"] for c in listing["items"]] == [conversation_id]


async def test_turn_id_makes_a_resend_idempotent(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply())
    alice = await sign_up(client)
    _, done = await chat(client, alice, turn_id="turn-1")
    conversation_id = done["conversation_id"]
    detail = (
        await client.get(f"/api/conversations/{conversation_id}", headers=alice.headers)
    ).json()
    fragment = detail["fragments"][0]["fragment"]
    turn = {
        "turn_id": "turn-1",
        "message": {"role": "user", "content": [{"type": "text", "text": "Make a counter"}]},
        "fragment": fragment,
    }
    for _ in range(2):
        resent = await client.post(
            f"/api/conversations/{conversation_id}/turns", json=turn, headers=alice.headers
        )
        assert resent.status_code == 200, resent.text
        assert resent.json()["fragment_id"] == done["fragment_id"]
    detail = (
        await client.get(f"/api/conversations/{conversation_id}", headers=alice.headers)
    ).json()
    assert len(detail["messages"]) == 2
    # A turn kept while the database was down creates its conversation under the client's id.
    new_id = uuid.uuid4().hex  # unique in the run's shared PostgreSQL database
    made = await client.post(
        f"/api/conversations/{new_id}/turns",
        json={**turn, "turn_id": "turn-2"},
        headers=alice.headers,
    )
    assert made.status_code == 200
    assert made.json()["conversation_id"] == new_id
    # Another tenant naming ids that are taken: refused or stored under fresh ids, never a 500.
    mallory = await sign_up(client, "mallory")
    taken = await client.post(
        f"/api/conversations/{conversation_id}/turns",
        json={**turn, "turn_id": "turn-3"},
        headers=mallory.headers,
    )
    assert taken.status_code == 404
    own_id = uuid.uuid4().hex
    clash = await client.post(
        f"/api/conversations/{own_id}/turns",
        json={**turn, "turn_id": "turn-4", "fragment_id": done["fragment_id"]},
        headers=mallory.headers,
    )
    assert clash.status_code == 200, clash.text
    assert clash.json()["fragment_id"] != done["fragment_id"]


async def test_nobody_chats_into_another_users_conversation(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    alice = await sign_up(client, "alice")
    mallory = await sign_up(client, "mallory")
    fake_openai.script(FragmentReply())
    _, done = await chat(client, alice)
    fake_openai.reset()
    for target in (done["conversation_id"], "0" * 32, "../etc"):
        response, _ = await chat(client, mallory, conversation_id=target)
        assert response.status_code == 404, target
        assert response.json()["error"] == "not_found"
    assert fake_openai.requests == []
    # Shared with the team still does not let another member chat into it.
    await client.patch(
        f"/api/conversations/{done['conversation_id']}",
        json={"shared": True},
        headers=alice.headers,
    )
    response, _ = await chat(client, mallory, conversation_id=done["conversation_id"])
    assert response.status_code == 404


@pytest.mark.auth_modes("guests")  # about guests, who do not exist with guests off
async def test_anonymous_chat_is_not_saved(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply())
    _, done = await chat(client, None)
    assert done["saved"] is False
    assert len(done["conversation_id"]) == 32


async def test_nobody_runs_another_users_fragment(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    alice = await sign_up(client, "alice")
    mallory = await sign_up(client, "mallory")
    fake_openai.script(FragmentReply(), FragmentReply())
    _, done = await chat(client, alice)
    fragment = {"template": "code-interpreter-v1", "code": "print(1)"}
    attempts: list[dict[str, Any]] = [
        {"fragment_id": done["fragment_id"]},
        {"fragment_id": done["fragment_id"], "conversation_id": done["conversation_id"]},
        {"fragment": fragment, "conversation_id": done["conversation_id"]},
        {"fragment": fragment, "fragment_id": done["fragment_id"]},
        {"fragment_id": "f" * 32},
    ]
    for attempt in attempts:
        response = await client.post("/api/sandbox", json=attempt, headers=mallory.headers)
        assert response.status_code == 404, (attempt, response.text)
        if "fragment_id" in attempt:
            # Anonymous callers never load stored fragments (their conversation ids are
            # ephemeral and key sandboxes of their own).
            response = await client.post("/api/sandbox", json=attempt)
            assert response.status_code == 404, (attempt, response.text)
    # The owner naming a fragment of one conversation with another conversation: refused too.
    _, other = await chat(client, alice, "Another one")
    response = await client.post(
        "/api/sandbox",
        json={"fragment_id": done["fragment_id"], "conversation_id": other["conversation_id"]},
        headers=alice.headers,
    )
    assert response.status_code == 404


async def test_a_saved_key_serves_the_users_chats(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    from tests.chat.conftest import PLATFORM_KEYS, received_key

    fake_openai.script(FragmentReply(), FragmentReply(), FragmentReply())
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    saved = await client.put(
        "/api/keys/openai", json={"api_key": "alice-own-openai-key"}, headers=alice.headers
    )
    assert saved.status_code == 200
    await chat(client, alice)
    await chat(client, alice, config={"api_key": "request-key"})
    await chat(client, bob)
    keys = [received_key(r) for r in fake_openai.requests if r.path.endswith("/chat/completions")]
    assert keys == ["alice-own-openai-key", "request-key", PLATFORM_KEYS["openai"]]
