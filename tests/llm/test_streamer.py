"""The direct streamer outside the chat endpoint: both transports, and the sink's view."""

from __future__ import annotations

import json

import pytest

from fragments.config import Settings
from fragments.llm.h1 import Httpx2Transport
from fragments.llm.streamer import DirectStreamer, create_http_client
from fragments.llm.types import Attempt, Fallback, ModelCall, Turn
from tests.fakes import SAMPLE_FRAGMENT, FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.text = ""

    def started(
        self, provider: str, model: str, fallback: bool, reason: Fallback | None = None
    ) -> None:
        self.events.append(("started", (provider, model, fallback)))

    def delta(self, text: str) -> None:
        self.text += text

    def reset(self, reason: str) -> None:
        self.events.append(("reset", reason))

    def abandoned(self, attempt: Attempt) -> None:
        self.events.append(("abandoned", attempt))


@pytest.mark.parametrize("transport", ["h1", "httpx2"])
async def test_both_transports_stream_the_same_answer(transport: str) -> None:
    with FakeOpenAI() as fake:
        fake.script(FragmentReply(chunk_size=7, input_tokens=42))
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            openai_base_url=fake.base_url,
            openai_api_key="k",
        )
        http = create_http_client(settings)
        streamer = DirectStreamer(
            settings, transport=Httpx2Transport(http) if transport == "httpx2" else None
        )
        sink = Sink()
        call = ModelCall("openai", "gpt-4.1", "be brief", (Turn("user", ("hi",)),))
        try:
            result = await streamer.stream(call, sink)
        finally:
            await streamer.aclose()
            await http.aclose()
    assert json.loads(sink.text) == SAMPLE_FRAGMENT
    assert sink.events == [("started", ("openai", "gpt-4.1", False))]
    assert result.usage.input_tokens == 42
    assert result.stop_reason == "tool_calls"
    assert not result.truncated
