"""History windowing, asserted on what the fake provider received: older code versions are
replaced by a reference, the current code goes exactly once, older turns are summarised (locally
for a client-sent history, by the cheap model and stored for a stored conversation), and the
stable prefix is marked for Anthropic's cache."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fragments.chat.window import (
    SUMMARY_HEADING,
    build_window,
    code_reference,
    exchanges,
    extractive_summary,
)
from fragments.config import Settings
from fragments.schemas import Message
from tests.accounts import sign_up
from tests.chat.conftest import app_client, chat_body, names, post_chat
from tests.conftest import Backend, database_settings
from tests.databases import PgDatabase
from tests.fakes import SAMPLE_FRAGMENT, FakeAnthropic, FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio


def code(version: int) -> str:
    return f"# CODE-V{version}-MARKER\n" + "print('hello')\n" * 20


def fragment(version: int) -> dict[str, Any]:
    return {
        **SAMPLE_FRAGMENT,
        "title": f"App v{version}",
        "commentary": f"Version {version} of the app. It does more things.",
        "code": code(version),
    }


def history(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        out.append({"role": "user", "content": [{"type": "text", "text": f"REQUEST-{i} please"}]})
        answer = [{"type": "text", "text": "ok"}]
        out.append({"role": "assistant", "content": answer, "object": fragment(i)})
    return out


def anthropic_body(n: int, text: str = "REQUEST-NEW make it blue") -> dict[str, Any]:
    body = chat_body(text, model="claude-sonnet-5-5", provider="anthropic")
    body["messages"] = [*history(n), *body["messages"]]
    return body


def window_of(n: int, keep: int = 5, step: int = 5, summary: str | None = None) -> Any:
    messages = [Message.model_validate(m) for m in history(n)]
    current = Message(role="user", content="REQUEST-NEW")  # type: ignore[arg-type]
    return build_window(
        messages,
        current,
        keep=keep,
        step=step,
        summary=summary,
        summary_turns=0,
        multimodal=True,
        max_image_bytes=1 << 20,
    )


def test_the_window_moves_in_steps_and_keeps_the_last_turns() -> None:
    assert window_of(4).folded == 0
    assert window_of(9).folded == 0  # 9 verbatim: the window has not moved yet
    w = window_of(10)
    assert w.folded == 5
    assert len(w.to_fold) == 5
    assert window_of(12, keep=5, step=1).folded == 7  # step 1: strictly the last 5


def test_old_code_is_a_reference_and_the_current_code_goes_once() -> None:
    w = window_of(12, summary="SUMMARY")
    text = json.dumps([list(map(str, t.parts)) for t in w.turns])
    for v in range(1, 12):
        assert f"CODE-V{v}-MARKER" not in text
    assert text.count("CODE-V12-MARKER") == 1
    assert code_reference(11) in text
    # The current code opens the last user turn, before the new message.
    last = w.turns[-1]
    assert last.role == "user"
    assert str(last.parts[0]).endswith(code(12))
    assert last.parts[-1] == "REQUEST-NEW"
    # Summary, then 7 verbatim exchanges (12 - 5 folded), then the new turn.
    assert str(w.turns[0].parts[0]).startswith(SUMMARY_HEADING)
    assert w.cache_turns == len(w.turns) - 1 == 1 + 7 * 2


def test_the_local_summary_is_deterministic_and_bounded() -> None:
    items = exchanges([Message.model_validate(m) for m in history(40)])
    a = extractive_summary(None, items, first_index=1, max_chars=1200)
    b = extractive_summary(None, items, first_index=1, max_chars=1200)
    assert a == b
    assert len(a) <= 1200
    assert "REQUEST-1 please" in a  # the original request is kept
    assert "REQUEST-40 please" in a
    assert "MARKER" not in a


async def test_client_history_is_windowed_on_the_wire(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(FragmentReply(), FragmentReply())
    response, events = await post_chat(client, anthropic_body(12))
    assert response.status_code == 200
    assert names(events)[-1] == "done"
    sent = fake_anthropic.last_request
    raw = sent.raw.decode()
    for v in range(1, 12):
        assert f"CODE-V{v}-MARKER" not in raw
    assert raw.count("CODE-V12-MARKER") == 1
    for i in range(1, 6):
        assert f"REQUEST-{i} please" in raw  # only in the summary
    body = sent.json
    first = body["messages"][0]["content"][0]["text"]
    assert first.startswith(SUMMARY_HEADING)
    assert "REQUEST-1 please" in first
    # Cache marks: tools, system, and the end of the stable history (the last answer).
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    marks = [
        (i, block)
        for i, m in enumerate(body["messages"])
        for block in m["content"]
        if "cache_control" in block
    ]
    assert len(marks) == 1
    index, block = marks[0]
    assert body["messages"][index]["role"] == "assistant"
    assert index == len(body["messages"]) - 2
    # Even the latest answer carries a reference: its code is sent once, in the last turn.
    assert code_reference(12) in block["text"]
    # The same history again: the same prompt, byte for byte (cacheable, deterministic).
    await post_chat(client, anthropic_body(12))
    assert fake_anthropic.requests[-1].raw == sent.raw


async def test_the_prefix_is_stable_from_one_turn_to_the_next(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(FragmentReply(), FragmentReply())
    # The default window moves 2 exchanges at a time: 7 and 8 earlier exchanges both fold 2.
    await post_chat(client, anthropic_body(7, "REQUEST-8 please"))
    first = fake_anthropic.requests[-1].json
    await post_chat(client, anthropic_body(8, "REQUEST-9 please"))
    second = fake_anthropic.requests[-1].json
    assert first["system"] == second["system"]
    assert first["tools"] == second["tools"]
    # Everything up to the marked block of the first request is the same in the second.
    stable = len(first["messages"]) - 1

    def strip(messages: list[dict[str, Any]]) -> list[Any]:
        return [
            [{k: v for k, v in b.items() if k != "cache_control"} for b in m["content"]]
            for m in messages
        ]

    assert strip(second["messages"][:stable]) == strip(first["messages"][:stable])


async def test_windowing_off_sends_the_whole_history(
    chat_settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    settings = chat_settings.model_copy(update={"history_window": False})
    fake_anthropic.script(FragmentReply())
    async with app_client(settings) as c:
        await post_chat(c, anthropic_body(12))
    raw = fake_anthropic.last_request.raw.decode()
    for v in range(1, 13):
        assert f"CODE-V{v}-MARKER" in raw


@pytest.fixture
async def small_window(
    chat_settings: Settings, backend: Backend, pg_database: PgDatabase | None
) -> AsyncIterator[httpx.AsyncClient]:
    """Keep 2, step 2; on SQLite and PostgreSQL (row-level security on)."""
    update = {"history_turns": 2, "history_step": 2, **database_settings(backend, pg_database)}
    settings = chat_settings.model_copy(update=update)
    async with app_client(settings) as c:
        yield c


async def test_a_stored_conversation_is_loaded_and_summarised_by_the_cheap_model(
    small_window: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    client = small_window
    alice = await sign_up(client, "alice")
    conversation_id = None
    for turn in range(1, 5):
        fake_openai.script(FragmentReply(fragment(turn)))
        body = chat_body(f"REQUEST-{turn} please", model="gpt-4.1", provider="openai")
        if conversation_id:
            body["conversation_id"] = conversation_id
        response = await client.post("/api/chat", json=body, headers=alice.headers)
        assert response.status_code == 200
        assert "event: done" in response.text
        conversation_id = (
            conversation_id
            or json.loads(
                response.text.split("event: done")[1].split("data: ")[1].split("\r\n")[0]
            )["conversation_id"]
        )
        requests = fake_openai.requests
        assert len(requests) == 1, turn  # no summary needed yet (at most 3 earlier turns)
        fake_openai.reset()

    # Turn 5: 4 earlier exchanges, keep 2, step 2 -> the window moves: the first two are
    # summarised by gpt-4.1-mini, then the answer is asked of gpt-4.1 with the summary.
    summary_reply = {**fragment(0), "commentary": "STORED-SUMMARY of turns one and two"}
    fake_openai.script(FragmentReply(summary_reply), FragmentReply(fragment(5)))
    body = chat_body("REQUEST-5 please", model="gpt-4.1", provider="openai")
    body["conversation_id"] = conversation_id
    response = await client.post("/api/chat", json=body, headers=alice.headers)
    assert "event: done" in response.text
    summary_call, answer_call = fake_openai.requests
    assert summary_call.json["model"] == "gpt-4.1-mini"
    summary_text = json.dumps(summary_call.json)
    assert "REQUEST-1 please" in summary_text
    assert "REQUEST-2 please" in summary_text
    assert "MARKER" not in summary_text  # no code goes to the summariser
    assert answer_call.json["model"] == "gpt-4.1"
    answer = answer_call.raw.decode()
    assert "STORED-SUMMARY of turns one and two" in answer
    assert "REQUEST-1 please" not in answer
    assert "REQUEST-3 please" in answer
    assert "REQUEST-4 please" in answer
    assert answer.count("CODE-V4-MARKER") == 1
    for v in (1, 2, 3):
        assert f"CODE-V{v}-MARKER" not in answer
    fake_openai.reset()

    # Turn 6: the window has not moved; the stored summary is reused, no summary call.
    fake_openai.script(FragmentReply(fragment(6)))
    body = chat_body("REQUEST-6 please", model="gpt-4.1", provider="openai")
    body["conversation_id"] = conversation_id
    response = await client.post("/api/chat", json=body, headers=alice.headers)
    assert "event: done" in response.text
    assert len(fake_openai.requests) == 1
    answer = fake_openai.last_request.raw.decode()
    assert "STORED-SUMMARY of turns one and two" in answer
    assert answer.count("CODE-V5-MARKER") == 1
    assert "CODE-V4-MARKER" not in answer
