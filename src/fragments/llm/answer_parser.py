"""What every provider's stream parser shares: counting and forwarding the answer's text, and
the tool-mode fallback to content a model wrote instead of calling the tool."""

from __future__ import annotations

from fragments.llm.providers import OutputMode
from fragments.llm.types import AnswerSink


class AnswerParser:
    """Base of the per-wire parsers (hot path: slots, no per-chunk allocation beyond the text)."""

    __slots__ = (
        "_aside",
        "_delta",
        "_provider",
        "_tool",
        "chars",
        "complete",
        "content_seen",
        "stop_reason",
    )

    def __init__(self, mode: OutputMode, sink: AnswerSink, provider: str) -> None:
        self._tool = mode == "tool"
        self._delta = sink.delta
        self._provider = provider
        # Content a model wrote instead of calling the tool; used only if no call came.
        self._aside: list[str] = []
        self.chars = 0
        self.content_seen = False
        self.complete = False
        self.stop_reason: str | None = None

    def _emit(self, text: str) -> None:
        self.chars += len(text)
        self.content_seen = True
        self._delta(text)

    def finish(self) -> None:
        if self._tool and not self.content_seen and self._aside:
            self._emit("".join(self._aside))
