"""The stream as a browser sees it, on a real socket: partials as the answer grows, disconnects."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest

from tests.chat.conftest import chat_body, names, stream_live
from tests.fakes import SAMPLE_FRAGMENT, FakeAnthropic, FakeOpenAI, FragmentReply, ServerThread

pytestmark = pytest.mark.anyio


async def test_partials_arrive_while_the_answer_streams(
    live_app: ServerThread, live_headers: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    # 133 chunks, 5 ms apart: about 0.7 s of streaming; partials every 20 ms (test settings).
    fake_openai.script(FragmentReply(chunk_size=24, delay=0.005))
    events = await stream_live(live_app.url, chat_body(), live_headers)

    order = names(events)
    assert order[0] == "provider"
    assert order[-3:] == ["fragment", "usage", "done"]
    partials = [e for e in events if e.name == "partial"]
    assert len(partials) >= 10, len(partials)
    # Partials are spread over the answer's ~0.7 s, not sent in a burst at the end. (Times are
    # relative to the first partial: the first request of a session also imports the SDK.)
    first, middle, final = partials[0].at, partials[len(partials) // 2].at, events[-3].at
    assert final - first > 0.4
    assert middle - first > 0.15
    assert final - middle > 0.15
    # Each partial is the whole fragment so far: fields only grow, code last.
    previous = ""
    for partial in partials:
        snapshot = json.dumps(partial.data["commentary"]) + partial.data["code"]
        assert len(snapshot) >= len(previous)
        previous = snapshot
    codes = [p.data["code"] for p in partials]
    assert codes[0] == ""
    assert 0 < len(codes[len(codes) // 2]) < len(SAMPLE_FRAGMENT["code"])  # type: ignore[arg-type]
    for earlier, later in itertools.pairwise(codes):
        assert later.startswith(earlier)
    assert events[-3].data["code"] == SAMPLE_FRAGMENT["code"]


async def test_an_answer_that_arrives_at_once_still_has_one_partial(
    live_app: ServerThread, live_headers: dict[str, str], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(FragmentReply(chunk_size=10_000))
    events = await stream_live(
        live_app.url, chat_body(model="claude-haiku-4-5", provider="anthropic"), live_headers
    )
    assert names(events) == ["provider", "partial", "fragment", "usage", "done"]


async def test_a_client_that_leaves_cancels_the_provider_call(
    live_app: ServerThread, live_headers: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply(chunk_size=24, delay=0.05))  # ~6.6 s if read to the end
    started = time.monotonic()
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "POST", f"{live_app.url}/api/chat", json=chat_body(), headers=live_headers
        ) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("event: partial"):
                break
    request = fake_openai.last_request
    assert request.wait_disconnected(5), "the provider call was not closed"
    assert not request.finished
    assert time.monotonic() - started < 5


async def test_a_stalled_provider_is_closed_when_the_client_leaves(
    live_app: ServerThread, live_headers: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply(stall_after=3))
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "POST", f"{live_app.url}/api/chat", json=chat_body(), headers=live_headers
        ) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("event: provider"):
                break
    assert fake_openai.last_request.wait_disconnected(5)


async def test_concurrent_streams_share_the_pool(
    live_app: ServerThread, live_headers: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    import asyncio

    fake_openai.default = FragmentReply(chunk_size=64, delay=0.002)
    try:
        results = await asyncio.gather(
            *(stream_live(live_app.url, chat_body(f"app {i}"), live_headers) for i in range(20))
        )
    finally:
        fake_openai.default = None
    assert all(names(r)[-1] == "done" for r in results)
    assert len(fake_openai.requests) == 20
