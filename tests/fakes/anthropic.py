"""Fake Anthropic messages API (`POST /v1/messages`, `stream: true`).

Tool mode: `message_start`, `content_block_start` (tool_use), `ping`, `content_block_delta`
(`input_json_delta`)*, `content_block_stop`, `message_delta` (stop_reason, usage), `message_stop`.
Text mode uses a text block with `text_delta`s. `base_url` is `http://127.0.0.1:PORT` (the SDK
appends `/v1/messages`).
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

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class AnthropicEncoder(Encoder):
    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith("/v1/messages")

    def lists_models(self, request: RecordedRequest) -> bool:
        return (
            request.method == "GET"
            and request.path.endswith("/v1/models")
            and "anthropic-version" in request.headers
        )

    def models_body(self) -> bytes:
        model = {
            "type": "model",
            "id": "claude-sonnet-5-5",
            "display_name": "Claude Sonnet",
            "created_at": "2026-01-01T00:00:00Z",
        }
        body = {"data": [model], "has_more": False, "first_id": model["id"], "last_id": model["id"]}
        return json.dumps(body).encode()

    @staticmethod
    def _tool_name(ex: Exchange) -> str:
        body = ex.request.json if isinstance(ex.request.json, dict) else {}
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("name"):
            return str(choice["name"])
        tools = body.get("tools") or []
        return str(tools[0].get("name", "fragment")) if tools else "fragment"

    def head(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        inp, _ = self.usage_counts(reply, ex)
        usage = {
            "input_tokens": max(0, inp - reply.cache_read_tokens - reply.cache_write_tokens)
            if reply.usage
            else 0,
            "cache_creation_input_tokens": reply.cache_write_tokens if reply.usage else 0,
            "cache_read_input_tokens": reply.cache_read_tokens if reply.usage else 0,
            "output_tokens": 1,
        }
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": ex.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        }
        block: dict[str, Any] = (
            {"type": "tool_use", "id": "toolu_fake", "name": self._tool_name(ex), "input": {}}
            if tool
            else {"type": "text", "text": ""}
        )
        return [
            sse(start, event="message_start"),
            sse(
                {"type": "content_block_start", "index": 0, "content_block": block},
                event="content_block_start",
            ),
            sse({"type": "ping"}, event="ping"),
        ]

    def content(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        def build(pieces: list[str]) -> list[bytes]:
            out = []
            for piece in pieces:
                delta = (
                    {"type": "input_json_delta", "partial_json": piece}
                    if tool
                    else {"type": "text_delta", "text": piece}
                )
                out.append(
                    sse(
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                        event="content_block_delta",
                    )
                )
            return out

        return reply.encoded(("anthropic", tool), build)

    def tail(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        _, out_tokens = self.usage_counts(reply, ex)
        return [
            sse({"type": "content_block_stop", "index": 0}, event="content_block_stop"),
            sse(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": reply.finish_reason or ("tool_use" if tool else "end_turn"),
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": out_tokens if reply.usage else 0},
                },
                event="message_delta",
            ),
            sse({"type": "message_stop"}, event="message_stop"),
        ]

    def error_body(self, reply: ErrorReply) -> bytes:
        if isinstance(reply.body, str):
            return reply.body.encode()
        if reply.body is not None:
            return json.dumps(reply.body).encode()
        kind = _ERROR_TYPES.get(reply.status, "api_error")
        return json.dumps(
            {"type": "error", "error": {"type": kind, "message": reply.message}}
        ).encode()

    def stream_error(self, reply: FragmentReply, error: StreamError, ex: Exchange) -> bytes:
        kind = error.kind or _ERROR_TYPES.get(error.status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": error.message}}
        return sse(body, event="error")


class FakeAnthropic(FakeProvider):
    """Fake Anthropic server; `base_url` is `http://127.0.0.1:PORT`."""


if __name__ == "__main__":
    from tests.fakes.__main__ import main

    main(default_protocol="anthropic")
