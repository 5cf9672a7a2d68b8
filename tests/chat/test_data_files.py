"""Uploaded data files reach the model and the sandbox: the model is told each file's name,
size and first lines; a run of the conversation gets the files for its working folder."""

from __future__ import annotations

import pytest

from fragments.config import Settings
from tests.accounts import sign_up
from tests.apps import app_client
from tests.chat.conftest import chat_body, names, parse_sse
from tests.fakes import FakeOpenAI, FragmentReply
from tests.fakes.sandboxes import FakeSandboxes

pytestmark = pytest.mark.anyio

CSV = b"city,sales\nParis,120\nLyon,80\n"


def system_text(request_json: dict[str, object]) -> str:
    messages = request_json["messages"]
    assert isinstance(messages, list)
    return "\n".join(str(m["content"]) for m in messages if m["role"] in ("system", "developer"))


async def test_the_model_and_the_sandbox_get_the_files(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    sandboxes = FakeSandboxes()
    async with app_client(chat_settings, sandboxes=sandboxes) as client:
        alice = await sign_up(client, "alice")
        cid = (await client.post("/api/conversations", json={}, headers=alice.headers)).json()["id"]
        uploaded = await client.post(
            f"/api/conversations/{cid}/files?name=sales.csv", content=CSV, headers=alice.headers
        )
        assert uploaded.status_code == 201, uploaded.text

        fake_openai.script(FragmentReply())
        response = await client.post(
            "/api/chat",
            json=chat_body("Chart the sales", conversation_id=cid),
            headers=alice.headers,
        )
        events = parse_sse(response.text)
        assert names(events)[-1] == "done", names(events)
        prompt = system_text(fake_openai.requests[-1].json)
        assert "sales.csv (29 B, csv), first lines:\ncity,sales\nParis,120" in prompt

        fragment_id = events[-1].data["fragment_id"]
        run = await client.post(
            "/api/sandbox",
            json={"conversation_id": cid, "fragment_id": fragment_id},
            headers=alice.headers,
        )
        assert run.status_code == 200, run.text
        assert sandboxes.data_files[-1] == (("sales.csv", CSV),)


async def test_a_conversation_without_files_says_nothing_of_them(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    async with app_client(chat_settings, sandboxes=FakeSandboxes()) as client:
        alice = await sign_up(client, "alice")
        fake_openai.script(FragmentReply())
        response = await client.post(
            "/api/chat", json=chat_body("Chart the sales"), headers=alice.headers
        )
        assert names(parse_sse(response.text))[-1] == "done"
        assert "Data files" not in system_text(fake_openai.requests[-1].json)
