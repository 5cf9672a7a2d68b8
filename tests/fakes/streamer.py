"""An in-process model streamer with a scripted answer, for tests about the chat layer around
the model (error mapping, accounting) rather than a provider's wire.

    app = create_app(settings, llm=FakeStreamer(['{"commentary": "hal'], error=RuntimeError()))

It plays each piece of `pieces` into the sink, then raises `error` if one is given, else
returns a result with `usage`. It implements `fragments.llm.types.ModelStreamer`: a real class,
not a mock. For the providers' real protocols, use the wire fakes (`FakeOpenAI`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fragments.llm.types import AnswerSink, ModelCall, StreamResult, Usage


@dataclass
class FakeStreamer:
    pieces: Sequence[str] = ()
    error: BaseException | None = None
    provider: str = "openai"
    usage: Usage = field(default_factory=Usage)
    calls: list[ModelCall] = field(default_factory=list)
    closed: bool = False

    async def stream(self, call: ModelCall, sink: AnswerSink) -> StreamResult:
        self.calls.append(call)
        sink.started(self.provider, call.model_id, False)
        for piece in self.pieces:
            sink.delta(piece)
        if self.error is not None:
            raise self.error
        return StreamResult(
            provider=self.provider, model=call.model_id, usage=self.usage, stop_reason="stop"
        )

    async def aclose(self) -> None:
        self.closed = True
