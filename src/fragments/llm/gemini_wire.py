"""Gemini `streamGenerateContent?alt=sse`.

Why not pydantic-ai's `GoogleProvider`, as for the others: building one (a google-genai `Client`)
costs ~90 ms of CPU, three times the whole per-answer budget, and the SDK validates every chunk
into pydantic objects. The request is small and stable, so it is built here; pydantic-ai still
supplies Gemini's JSON-schema transformer. The answer comes as JSON text constrained by
`responseJsonSchema` (full JSON Schema, which keeps `$defs` and the key order, so `code` streams
last; the older `responseSchema` takes only an OpenAPI subset).
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

import httpx2
from pydantic_ai.profiles.google import google_model_profile

from fragments.llm.answer_parser import AnswerParser
from fragments.llm.faults import stream_error
from fragments.llm.providers import Endpoint, OutputMode
from fragments.llm.types import AnswerSink, ImageInput, ModelCall, Usage
from fragments.llm.wire import WireRequest, dumps, loads, profiled_schema, put_given


@functools.lru_cache(maxsize=256)
def _schema(model_id: str) -> dict[str, Any]:
    return profiled_schema(google_model_profile(model_id))


def stream_url(base_url: str, model_id: str) -> str:
    """`{base}/v1beta/models/{model}:streamGenerateContent?alt=sse`; a base URL that already
    names an API version keeps it."""
    base = base_url.rstrip("/")
    if not base.rsplit("/", 1)[-1].startswith("v1"):
        base += "/v1beta"
    model = model_id.removeprefix("models/")
    return f"{base}/models/{quote(model, safe='-._~')}:streamGenerateContent?alt=sse"


class GeminiWire:
    def __init__(self, http: httpx2.AsyncClient) -> None:
        pass  # requests are plain JSON over the streamer's transport

    def body(self, call: ModelCall) -> dict[str, Any]:
        contents: list[dict[str, Any]] = []
        for turn in call.turns:
            parts: list[dict[str, Any]] = []
            for part in turn.parts:
                if isinstance(part, ImageInput):
                    parts.append({"inlineData": {"mimeType": part.media_type, "data": part.data}})
                elif part:
                    parts.append({"text": part})
            if parts:
                contents.append(
                    {"role": "model" if turn.role == "assistant" else "user", "parts": parts}
                )
        config: dict[str, Any] = {
            "responseMimeType": "application/json",
            "responseJsonSchema": _schema(call.model_id),
        }
        s = call.sampling
        put_given(
            config,
            ("temperature", s.temperature),
            ("topP", s.top_p),
            ("topK", s.top_k),
            ("maxOutputTokens", s.max_tokens),
            ("frequencyPenalty", s.frequency_penalty),
            ("presencePenalty", s.presence_penalty),
        )
        return {
            "systemInstruction": {"parts": [{"text": call.system}]},
            "contents": contents,
            "generationConfig": config,
        }

    def request(self, call: ModelCall, endpoint: Endpoint, mode: OutputMode) -> WireRequest:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "x-goog-api-key": endpoint.api_key,
        }
        return WireRequest(
            stream_url(endpoint.base_url, call.model_id), headers, dumps(self.body(call))
        )

    def parser(self, endpoint: Endpoint, mode: OutputMode, sink: AnswerSink) -> GeminiParser:
        return GeminiParser(sink, endpoint.provider_name)


class GeminiParser(AnswerParser):
    __slots__ = ("_usage",)

    def __init__(self, sink: AnswerSink, provider: str) -> None:
        # Gemini is always asked for JSON (no tool call), so there is no aside to fall back to.
        super().__init__("json", sink, provider)
        self._usage: dict[str, Any] | None = None

    def feed(self, payload: bytes) -> None:
        obj = loads(payload)
        if obj.get("error"):
            raise stream_error(self._provider, obj)
        candidates = obj.get("candidates")
        if candidates:
            candidate = candidates[0]
            content = candidate.get("content")
            if content:
                for part in content.get("parts") or ():
                    text = part.get("text")
                    # Thought summaries (when a model shares them) are not the answer.
                    if text and not part.get("thought"):
                        self._emit(text)
            reason = candidate.get("finishReason")
            if reason:
                self.stop_reason = reason
                self.complete = True
        else:
            feedback = obj.get("promptFeedback")
            if feedback and feedback.get("blockReason"):
                self.stop_reason = f"BLOCKED_{feedback['blockReason']}"
                self.complete = True
        usage = obj.get("usageMetadata")
        if usage:
            self._usage = usage

    def usage(self) -> Usage | None:
        u = self._usage
        if not u or ("candidatesTokenCount" not in u and "promptTokenCount" not in u):
            return None
        return Usage(
            input_tokens=int(u.get("promptTokenCount") or 0),
            output_tokens=int(u.get("candidatesTokenCount") or 0)
            + int(u.get("thoughtsTokenCount") or 0),
            cache_read_tokens=int(u.get("cachedContentTokenCount") or 0),
        )
