"""The running summary of a conversation's older turns.

For a stored conversation it is written by a cheap model of the same provider, through the same
`ModelStreamer` seam as answers (the summary comes back in the fragment's `commentary`), and
stored with the conversation when the window moves. Without a stored conversation (the client
sends the whole history) it is made locally by `extractive_summary`: deterministic, free, and
the same on every request, so the prompt prefix stays cacheable.
"""

from __future__ import annotations

import structlog

from fragments.chat.window import Exchange, extractive_summary, message_text
from fragments.llm.providers import PROVIDERS
from fragments.llm.types import (
    Attempt,
    Fallback,
    ModelCall,
    ModelStreamer,
    Sampling,
    StreamResult,
    Turn,
)
from fragments.schemas import Fragment

log = structlog.get_logger(__name__)

SUMMARY_SYSTEM = """You keep a running summary of a conversation between a user and an
assistant that writes programs (fragments). You are given the summary so far and the next
turns. Write the updated summary into the `commentary` field: plain sentences or short lines,
at most {max_chars} characters, keeping what later requests may depend on (what the app does,
decisions, names, data, constraints, open requests). Never include code. Put "-" in `code` and
"code-interpreter-v1" in `template`; leave the other fields empty."""


class _Collect:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[str] = []

    def started(
        self, provider: str, model: str, fallback: bool, reason: Fallback | None = None
    ) -> None:
        pass

    def delta(self, text: str) -> None:
        self.parts.append(text)

    def reset(self, reason: str) -> None:
        self.parts.clear()

    def abandoned(self, attempt: Attempt) -> None:
        # Summaries never fail over (their call has no fallbacks): the local summary is theirs.
        pass


def summary_input(previous: str | None, items: list[Exchange], first_index: int) -> str:
    lines = [f"Summary so far:\n{previous or '(none)'}", "", "Next turns:"]
    for offset, item in enumerate(items):
        lines.append(f"Turn {first_index + offset}. User: {message_text(item.user, 2000)}")
        answer = item.answer
        if answer is not None and answer.object is not None:
            f = answer.object
            lines.append(
                f"Assistant built version {item.version} ({f.template}) “{f.title}”: "
                f"{' '.join(f.commentary.split())[:1000]}"
            )
        elif answer is not None:
            lines.append(f"Assistant: {message_text(answer, 1000)}")
    return "\n".join(lines)


async def model_summary(
    streamer: ModelStreamer,
    call: ModelCall,
    previous: str | None,
    items: list[Exchange],
    *,
    first_index: int,
    max_chars: int,
) -> tuple[str, StreamResult | None]:
    """The summary with `items` folded in, by the provider's cheap model; the local extractive
    summary (and None) when that call fails."""
    # The family's cheaper model where its spec names one, else the chat's own model.
    model_id = PROVIDERS[call.provider_id].summary_model or call.model_id
    if call.base_url is not None:
        model_id = call.model_id  # a caller's own server may not serve the cheap model
    request = ModelCall(
        provider_id=call.provider_id,
        model_id=model_id,
        system=SUMMARY_SYSTEM.format(max_chars=max_chars),
        turns=(Turn("user", (summary_input(previous, items, first_index),)),),
        sampling=Sampling(temperature=0.0, max_tokens=1024),
        api_key=call.api_key,
        base_url=call.base_url,
        # No failover: when the cheap model fails the local summary serves.
        fallbacks=(),
    )
    sink = _Collect()
    try:
        result = await streamer.stream(request, sink)
        text = "".join(sink.parts)
        start, end = text.find("{"), text.rfind("}")
        summary = Fragment.model_validate_json(text[start : end + 1]).commentary.strip()
        if not summary:
            raise ValueError("empty summary")
    except Exception as exc:  # any failure: the local summary is always available
        log.warning("summary_failed", provider=call.provider_id, model=model_id, error=repr(exc))
        local = extractive_summary(previous, items, first_index=first_index, max_chars=max_chars)
        return local, None
    return summary[:max_chars], result
