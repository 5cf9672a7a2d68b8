"""Fake OpenAI chat completions (`POST /v1/chat/completions`, `stream: true`).

Tool-call mode streams `delta.tool_calls[0].function.arguments` fragments; text mode streams
`delta.content`. With `stream_options.include_usage` every chunk carries `"usage": null` and a
last chunk with empty `choices` carries the usage, as OpenAI does.

Standalone (for benches): `python -m tests.fakes.openai --port 8011 --chunk-size 24 --delay 0.02`
answers every request with the ~3 KB sample fragment, forever.
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
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


class OpenAIEncoder(Encoder):
    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith("/chat/completions")

    def lists_models(self, request: RecordedRequest) -> bool:
        # Anthropic lists at the same path; its requests carry `anthropic-version`.
        return (
            request.method == "GET"
            and request.path.endswith("/models")
            and "anthropic-version" not in request.headers
            and "x-goog-api-key" not in request.headers
        )

    def models_body(self) -> bytes:
        models = [{"id": "gpt-4.1", "object": "model", "created": 1744000000, "owned_by": "openai"}]
        return json.dumps({"object": "list", "data": models}).encode()

    @staticmethod
    def _include_usage(ex: Exchange) -> bool:
        body = ex.request.json if isinstance(ex.request.json, dict) else {}
        options = body.get("stream_options") or {}
        return bool(options.get("include_usage"))

    @staticmethod
    def _tool_name(ex: Exchange) -> str:
        body = ex.request.json if isinstance(ex.request.json, dict) else {}
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            return str(choice.get("function", {}).get("name", "fragment"))
        tools = body.get("tools") or []
        if tools:
            return str(tools[0].get("function", {}).get("name", "fragment"))
        return "fragment"

    def _chunk(self, ex: Exchange, choices: list[Any], usage: bool) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": ex.model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if usage:
            chunk["usage"] = None
        return chunk

    def head(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        delta: dict[str, Any] = {"role": "assistant", "content": None if tool else ""}
        delta["refusal"] = None
        if tool:
            delta["tool_calls"] = [
                {
                    "index": 0,
                    "id": "call_fake",
                    "type": "function",
                    "function": {"name": self._tool_name(ex), "arguments": ""},
                }
            ]
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return [sse(self._chunk(ex, [choice], self._include_usage(ex)))]

    def content(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        usage = self._include_usage(ex)

        def build(pieces: list[str]) -> list[bytes]:
            out = []
            for piece in pieces:
                if tool:
                    delta: dict[str, Any] = {
                        "tool_calls": [{"index": 0, "function": {"arguments": piece}}]
                    }
                else:
                    delta = {"content": piece}
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
                out.append(sse(self._chunk(ex, [choice], usage)))
            return out

        return reply.encoded(("openai", tool, usage, ex.model), build)

    def tail(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        usage = self._include_usage(ex)
        finish = reply.finish_reason or ("tool_calls" if tool else "stop")
        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}
        out = [sse(self._chunk(ex, [choice], usage))]
        if usage and reply.usage:
            inp, outp = self.usage_counts(reply, ex)
            chunk = self._chunk(ex, [], False)
            chunk["usage"] = {
                "prompt_tokens": inp,
                "completion_tokens": outp,
                "total_tokens": inp + outp,
                "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens},
                "completion_tokens_details": {"reasoning_tokens": 0},
            }
            out.append(sse(chunk))
        out.append(b"data: [DONE]\n\n")
        return out

    def error_body(self, reply: ErrorReply) -> bytes:
        if isinstance(reply.body, str):
            return reply.body.encode()
        if reply.body is not None:
            return json.dumps(reply.body).encode()
        kind, code = _ERROR_TYPES.get(reply.status, ("server_error", None))
        return json.dumps(
            {"error": {"message": reply.message, "type": kind, "param": None, "code": code}}
        ).encode()

    def stream_error(self, reply: FragmentReply, error: StreamError, ex: Exchange) -> bytes:
        kind, code = _ERROR_TYPES.get(error.status, ("server_error", None))
        usage = None
        if error.usage:
            inp, outp = self.usage_counts(reply, ex)
            usage = {"prompt_tokens": inp, "completion_tokens": outp, "total_tokens": inp + outp}
        if error.flavor == "openrouter":
            # A whole chunk: OpenRouter keeps `choices` so naive clients do not crash on it.
            chunk = self._chunk(ex, [], False)
            chunk["provider"] = "FakeUpstream"
            chunk["error"] = {
                "code": error.status,
                "message": error.message,
                "metadata": {"provider_name": "FakeUpstream", "error_type": error.kind},
            }
            chunk["choices"] = [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": "error",
                    "native_finish_reason": "error",
                }
            ]
            if usage is not None:
                chunk["usage"] = usage
            return sse(chunk)
        body: dict[str, Any] = {
            "message": error.message,
            "type": error.kind or kind,
            "param": None,
            "code": code,
        }
        if error.flavor == "groq":
            # Groq: the HTTP status it could not send, and a string code.
            body["code"] = error.kind or code or kind
            body["type"] = kind
            body["status_code"] = error.status
        out: dict[str, Any] = {"error": body}
        if usage is not None:
            out["usage"] = usage
        return sse(out)


class FakeOpenAI(FakeProvider):
    """Fake OpenAI-compatible server; `base_url` is `http://127.0.0.1:PORT/v1`."""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


if __name__ == "__main__":
    from tests.fakes.__main__ import main

    main(default_protocol="openai")
