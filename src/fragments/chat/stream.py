"""The `/api/chat` event stream: provider text in, SSE events out, on a timer.

Per provider chunk the only work is `Answer.delta` (a list append). Every
`partial_interval_seconds` the ticker joins the text, validates it as a partial Fragment and
sends a `partial` snapshot if it changed; the first partial goes out as soon as text arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from pydantic import TypeAdapter, ValidationError

from fragments.chat.edits import partial_code
from fragments.chat.finalize import finalize
from fragments.chat.telemetry import answer_ended
from fragments.llm.errors import LLMError
from fragments.llm.pricing import cost_usd
from fragments.llm.providers import find_provider
from fragments.llm.types import Attempt, Fallback, ModelCall, ModelStreamer, StreamResult, Usage
from fragments.llm.wire import estimate_input_tokens
from fragments.observability import metrics, tracing
from fragments.observability.context import note_secret
from fragments.sandbox.templates import Template
from fragments.schemas import Fragment

log = structlog.get_logger(__name__)

_FRAGMENT = TypeAdapter(Fragment)
# Stores a finished turn once the answer is complete: (fragment, result) -> (fragment_id, saved).
SaveTurn = Callable[[Fragment, StreamResult], Awaitable[tuple[str, bool]]]
# Records the usage of an answer cut off before it completed, or of an attempt a failover chain
# gave up: (usage, cost_usd, "provider/model" that consumed it).
ChargeCut = Callable[[Usage, float, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Answered:
    """What is known of a completed answer, for product analytics (no content)."""

    fragment_id: str
    template: str
    result: StreamResult
    seconds: float
    # From the request to the model's first piece of text; None if it never streamed.
    first_token_seconds: float | None


# Told once an answer completed (after it was stored).
OnAnswered = Callable[[Answered], None]

_INTERNAL = "Something went wrong on our side; please try again."


def sse(event: str, data: bytes) -> bytes:
    """One SSE event; `data` is compact JSON, so it never holds a raw line break."""
    return b"event: " + event.encode() + b"\r\ndata: " + data + b"\r\n\r\n"


def sse_json(event: str, data: dict[str, Any]) -> bytes:
    return sse(event, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


class Answer:
    """The sink the model layer streams into (see `AnswerSink`)."""

    __slots__ = (
        "_first",
        "answering",
        "fallback",
        "first_at",
        "model",
        "notices",
        "parts",
        "provider",
        "span",
        "spent",
        "wake",
    )

    def __init__(self, span: tracing.Span = tracing.INVALID_SPAN) -> None:
        self.parts: list[str] = []
        # The model answering now (a failover chain may change it) and the attempts it gave up.
        self.answering: tuple[str, str] | None = None
        self.spent: list[Attempt] = []
        # Events to send before the next partial: provider, reset.
        self.notices: list[bytes] = []
        self.wake: asyncio.Future[None] | None = None
        self._first = True
        # For the log line and metrics: when the first text came, and who answered.
        self.first_at: float | None = None
        self.provider: str | None = None
        self.model: str | None = None
        self.fallback = False
        # The model call's span (a no-op while tracing is off).
        self.span = span

    def _poke(self) -> None:
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def started(
        self, provider: str, model: str, fallback: bool, reason: Fallback | None = None
    ) -> None:
        self.answering = (provider, model)
        self.span.set_attributes(
            {
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
                "llm.fallback": fallback,
            }
        )
        self.provider, self.model = provider, model
        self.fallback = self.fallback or fallback
        data: dict[str, Any] = {"provider": provider, "model": model, "fallback": fallback}
        if reason is not None:
            data["reason"] = reason.reason
            data["from"] = {"provider": reason.provider, "model": reason.model}
            metrics.llm_fallback(reason.provider, provider, reason.reason)
        self.notices.append(sse_json("provider", data))
        self._poke()

    def delta(self, text: str) -> None:
        self.parts.append(text)
        if self._first:
            # Only the first piece wakes the ticker; later ones wait for its next tick.
            self._first = False
            if self.first_at is None:
                self.first_at = time.monotonic()
            self._poke()
            self.span.add_event("first_token")

    def reset(self, reason: str) -> None:
        self.parts.clear()
        self._first = True
        self.notices.append(sse_json("reset", {"reason": reason}))
        self._poke()

    def abandoned(self, attempt: Attempt) -> None:
        self.spent.append(attempt)

    def answering_call(self, call: ModelCall) -> ModelCall:
        """`call` as sent to the model answering now (the one a cut answer is charged to)."""
        if self.answering is None or self.answering == (call.provider_id, call.model_id):
            return call
        provider, model = self.answering
        spec = find_provider(provider)
        if spec is None:
            return call
        return dataclasses.replace(call, provider_id=spec.id, model_id=model)

    def finished(self, _task: object) -> None:
        self._poke()

    def text(self) -> str:
        parts = self.parts
        if len(parts) > 1:
            joined = "".join(parts)
            parts.clear()
            parts.append(joined)
        return parts[0] if parts else ""

    @property
    def streaming(self) -> bool:
        return not self._first


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def partial_snapshot(
    text: str, pinned: Template | None, base: Fragment | None = None
) -> bytes | None:
    """The partial Fragment as JSON, or None while the text cannot be read as one yet. `base`:
    the fragment an edit changes, whose code the partials show while the edit streams."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        fragment = _FRAGMENT.validate_json(
            text[start:], experimental_allow_partial="trailing-strings"
        )
    except ValidationError:
        return None
    if pinned is not None:
        fragment.template = pinned.id
    if base is not None:
        partial_code(base, fragment)
    return _FRAGMENT.dump_json(fragment)


def estimate_cut(call: ModelCall, chars: int) -> tuple[Usage, float]:
    """Usage of an answer cut off mid-stream, estimated locally (characters / 4: no tokenizer
    is downloaded at run time), and its list-price cost (0 on a caller's own server)."""
    usage = Usage(
        input_tokens=estimate_input_tokens(call), output_tokens=chars // 4, reported=False
    )
    return usage, 0.0 if call.base_url else cost_usd(call.model_id, usage)


def cut_usage(call: ModelCall, chars: int, reported: Usage | None) -> tuple[Usage, float]:
    """What a failed answer cost: the usage the provider reported before failing (an error
    chunk may carry it), else the estimate."""
    if reported is None:
        return estimate_cut(call, chars)
    return reported, 0.0 if call.base_url else cost_usd(call.model_id, reported)


def _ended(
    answer: Answer,
    call: ModelCall,
    began: float,
    outcome: str | None,
    spent: tuple[Usage, float] | None,
) -> dict[str, Any]:
    """Record the answer's metrics (see `telemetry`); its log fields."""
    usage, cost = spent if spent is not None else (None, 0.0)
    return answer_ended(
        call,
        began=began,
        first_at=answer.first_at,
        provider=answer.provider,
        model=answer.model,
        fallback=answer.fallback,
        outcome=outcome,
        usage=usage,
        cost=cost,
    )


async def chat_events(
    streamer: ModelStreamer,
    call: ModelCall,
    *,
    pinned: Template | None,
    conversation_id: str,
    interval: float,
    save: SaveTurn | None = None,
    charge: ChargeCut | None = None,
    answered: OnAnswered | None = None,
    base: Fragment | None = None,
) -> AsyncIterator[bytes]:
    """Every SSE event of one answer, ending with `done` or `error`. An answer cut off after
    it started streaming (the provider's stream broke, or the client left) is `charge`d with
    its estimated usage. `base`: the fragment this answer edits (see `chat/edits.py`)."""
    loop = asyncio.get_running_loop()
    # A caller's own key never reaches a log line (a provider's error may quote it).
    note_secret(call.api_key)
    llm_span = tracing.start_span(
        "chat.llm_stream",
        {"gen_ai.provider.name": call.provider_id, "gen_ai.request.model": call.model_id},
    )
    answer = Answer(llm_span)
    began = time.monotonic()
    # The model call's own spans (its HTTP request) are the LLM span's children.
    with tracing.current(llm_span):
        task = loop.create_task(streamer.stream(call, answer))
    task.add_done_callback(answer.finished)
    last_len = -1
    last_sent = b""
    partials = 0
    bound = log.bind(
        conversation_id=conversation_id, provider=call.provider_id, model=call.model_id
    )
    try:
        while True:
            wake: asyncio.Future[None] = loop.create_future()
            answer.wake = wake
            if not task.done():
                # Woken by the timer once text is flowing, else by the answer's first event.
                timer = loop.call_later(interval, _wake, wake) if answer.streaming else None
                try:
                    await wake
                finally:
                    if timer is not None:
                        timer.cancel()
            answer.wake = None
            # Events ready together go out in one write: each write is a syscall.
            out: list[bytes] = []
            if answer.notices:
                out += answer.notices
                answer.notices.clear()
                last_len, last_sent = -1, b""
            done = task.done()
            if not done or not (partials or task.exception() is not None):
                text = answer.text()
                if len(text) != last_len:
                    last_len = len(text)
                    snapshot = partial_snapshot(text, pinned, base)
                    if snapshot is not None and snapshot != last_sent:
                        last_sent = snapshot
                        partials += 1
                        out.append(sse("partial", snapshot))
            if out:
                yield b"".join(out)
            if done:
                # An answer that arrived all at once still gets one partial, so clients see
                # the same sequence whatever the provider's pace.
                break
        _end_llm_span(llm_span, task)
        try:
            result: StreamResult = task.result()
            text = result.text if result.text is not None else answer.text()
            fragment = finalize(text, result, pinned)
        except LLMError as exc:
            cut_call = answer.answering_call(call)
            cut = cut_usage(cut_call, len(answer.text()), exc.usage) if exc.after_content else None
            if charge is not None and cut is not None:
                with anyio.CancelScope(shield=True), tracing.span("chat.persist"):
                    await charge(*cut, _label(cut_call))
            bound.warning(
                "chat_failed",
                **_ended(answer, call, began, exc.code, cut),
                error=exc.code,
                detail=exc.detail,
                status=exc.status,
                upstream=(exc.upstream or "")[:500],
                seconds=round(time.monotonic() - began, 3),
            )
            yield sse_json("error", {"error": exc.code, "detail": exc.detail})
            return
        except Exception:
            bound.exception("chat_crashed", **_ended(answer, call, began, "internal", None))
            yield sse_json("error", {"error": "internal", "detail": _INTERNAL})
            return
        usage = result.usage
        fragment_json = _FRAGMENT.dump_json(fragment)
        fragment_bytes = sse("fragment", fragment_json)
        if result.text is not None:
            # A merged edit: the last partial is the whole new code, as after any answer.
            fragment_bytes = sse("partial", fragment_json) + fragment_bytes
        if save is not None:
            # The fragment goes out first: the user sees it while the turn is stored.
            yield fragment_bytes
            fragment_bytes = b""
            # Shielded: a client that leaves now does not cancel the save half-way.
            with tracing.span("chat.persist"):
                saving = asyncio.ensure_future(save(fragment, result))
                fragment_id, saved = await asyncio.shield(saving)
        else:
            fragment_id, saved = uuid.uuid4().hex, False
        usage_data: dict[str, Any] = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "cost_usd": result.cost_usd,
        }
        if result.edit is not None:
            usage_data["edit"] = result.edit
        done_data = {"conversation_id": conversation_id, "fragment_id": fragment_id, "saved": saved}
        yield (fragment_bytes + sse_json("usage", usage_data) + sse_json("done", done_data))
        # A cached answer called no model: it is logged, not counted as a model answer.
        cached = result.stop_reason == "cached"
        bound.info(
            "chat_answered",
            **_ended(answer, call, began, None if cached else "ok", (usage, result.cost_usd)),
            cached=cached,
            fragment_id=fragment_id,
            template=fragment.template,
            partials=partials,
            chars=len(answer.text()),
            seconds=round(time.monotonic() - began, 3),
        )
        if answered is not None:
            first = answer.first_at
            answered(
                Answered(
                    fragment_id,
                    fragment.template,
                    result,
                    seconds=time.monotonic() - began,
                    first_token_seconds=None if first is None else first - began,
                )
            )
    finally:
        if not task.done():
            # The client went away (or the server is stopping): close the provider call now so
            # the provider stops generating, and do not leave the task to die on its own.
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait((task,), timeout=5)
                chars = len(answer.text())
                cut_call = answer.answering_call(call)
                cut = estimate_cut(cut_call, chars) if chars else None
                if charge is not None and cut is not None:
                    await charge(*cut, _label(cut_call))
            bound.info(
                "chat_cancelled",
                **_ended(answer, call, began, None, cut),
                seconds=round(time.monotonic() - began, 3),
            )
        elif not task.cancelled():
            task.exception()  # retrieved, so an unread failure is never reported as lost
        if charge is not None and answer.spent:
            # Attempts a failover chain gave up are charged to the models that consumed them,
            # however the answer ended.
            with anyio.CancelScope(shield=True):
                for attempt in answer.spent:
                    await charge(attempt.usage, attempt.cost_usd, attempt.label)
        tracing.end_span(llm_span, error="cancelled")  # only if the client left mid-stream


def _label(call: ModelCall) -> str:
    return f"{call.provider_id}/{call.model_id}"


def _end_llm_span(span: tracing.Span, task: asyncio.Task[StreamResult]) -> None:
    """The model call's span ends with the call: its tokens, or the error code it failed with."""
    if not span.is_recording():
        return
    error = task.exception() if not task.cancelled() else None
    if task.cancelled() or error is not None:
        code = error.code if isinstance(error, LLMError) else "internal"
        tracing.end_span(span, error="cancelled" if task.cancelled() else code)
        return
    result = task.result()
    usage = result.usage
    tracing.end_span(
        span,
        attributes={
            "gen_ai.provider.name": result.provider,
            "gen_ai.response.model": result.model,
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "gen_ai.usage.cache_read_tokens": usage.cache_read_tokens,
            "gen_ai.usage.cache_write_tokens": usage.cache_write_tokens,
            "llm.usage_reported": usage.reported,
            "llm.cost_usd": result.cost_usd,
        },
    )
