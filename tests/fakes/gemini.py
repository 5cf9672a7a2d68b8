"""Fake Gemini API (`POST /v1beta/models/{model}:streamGenerateContent?alt=sse`).

Streams `{"candidates": [{"content": {"parts": [{"text": ...}], "role": "model"}}],
"usageMetadata": ...}` events separated by CRLF CRLF, the last with `finishReason: "STOP"`.
`base_url` is `http://127.0.0.1:PORT` (clients append `/v1beta/models/...`).
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.base import (
    Encoder,
    ErrorReply,
    Exchange,
    FakeProvider,
    FragmentReply,
    RecordedRequest,
    StreamError,
    sse,
)

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_SEP = b"\r\n\r\n"


class GeminiEncoder(Encoder):
    sep = _SEP

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith(":streamGenerateContent")

    def lists_models(self, request: RecordedRequest) -> bool:
        return (
            request.method == "GET"
            and request.path.endswith("/models")
            and "x-goog-api-key" in request.headers
        )

    def models_body(self) -> bytes:
        model = {
            "name": "models/gemini-2.5-flash",
            "displayName": "Gemini 2.5 Flash",
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
        }
        return json.dumps({"models": [model]}).encode()

    def model(self, request: RecordedRequest) -> str:
        name = request.path.rsplit("/", 1)[-1]
        return name.split(":", 1)[0]

    def wants_tool(self, reply: FragmentReply, request: RecordedRequest) -> bool:
        return False

    def head(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        return []

    @staticmethod
    def _event(
        ex: Exchange, text: str | None, usage: dict[str, int], finish: str = "STOP"
    ) -> bytes:
        candidate: dict[str, Any] = {"index": 0}
        if text is not None:
            candidate["content"] = {"parts": [{"text": text}], "role": "model"}
        else:
            candidate["content"] = {"parts": [{"text": ""}], "role": "model"}
            candidate["finishReason"] = finish
        return sse(
            {
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": ex.model,
                "responseId": "fake-response",
            },
            sep=_SEP,
        )

    def content(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        # Real Gemini repeats the prompt count in every event; the total in the last is enough.
        def build(pieces: list[str]) -> list[bytes]:
            return [self._event(ex, piece, {}) for piece in pieces]

        return reply.encoded(("gemini", ex.model), build)

    def tail(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        inp, out = self.usage_counts(reply, ex)
        usage: dict[str, int] = {}
        if reply.usage:
            usage = {
                "promptTokenCount": inp,
                "candidatesTokenCount": out,
                "totalTokenCount": inp + out,
            }
            if reply.cache_read_tokens:
                usage["cachedContentTokenCount"] = reply.cache_read_tokens
        return [self._event(ex, None, usage, reply.finish_reason or "STOP")]

    def error_body(self, reply: ErrorReply) -> bytes:
        if isinstance(reply.body, str):
            return reply.body.encode()
        if reply.body is not None:
            return json.dumps(reply.body).encode()
        status = _STATUS.get(reply.status, "INTERNAL")
        return json.dumps(
            {"error": {"code": reply.status, "message": reply.message, "status": status}}
        ).encode()

    def stream_error(self, reply: FragmentReply, error: StreamError, ex: Exchange) -> bytes:
        status = error.kind or _STATUS.get(error.status, "INTERNAL")
        body: dict[str, Any] = {
            "error": {"code": error.status, "message": error.message, "status": status}
        }
        if error.usage:
            inp, out = self.usage_counts(reply, ex)
            body["usageMetadata"] = {"promptTokenCount": inp, "candidatesTokenCount": out}
        return sse(body, sep=_SEP)


class FakeGemini(FakeProvider):
    """Fake Gemini server; `base_url` is `http://127.0.0.1:PORT`."""


if __name__ == "__main__":
    from tests.fakes.__main__ import main

    main(default_protocol="gemini")
