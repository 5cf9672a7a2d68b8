"""Anthropic messages API: a forced `fragment` tool whose input streams as `input_json_delta`.

`AnthropicProvider` (pydantic-ai) wraps the SDK client we configure (pooled HTTP client, no SDK
retries); its model profile supplies the schema transformer and the model's output limit. The
tool is marked `eager_input_streaming` so Claude streams the input as it writes it instead of
one whole value at a time (otherwise `code` would arrive in one piece at the end), and the system
prompt and tool carry `cache_control` so repeated prompts are read from Anthropic's cache, as
does the end of the stable history prefix (`ModelCall.cache_turns`, set by history windowing).
"""

from __future__ import annotations

import functools
from typing import Any

from anthropic import AsyncAnthropic
from pydantic_ai.providers.anthropic import AnthropicProvider

from fragments.llm.answer_parser import AnswerParser
from fragments.llm.faults import stream_error
from fragments.llm.providers import Endpoint, OutputMode
from fragments.llm.sdk_clients import SdkWire
from fragments.llm.types import AnswerSink, ImageInput, ModelCall, Turn, Usage
from fragments.llm.wire import (
    TOOL_DESCRIPTION,
    TOOL_NAME,
    json_instructions,
    loads,
    profiled_schema,
)

# Enough for a large multi-file answer; models with a known lower limit get theirs.
DEFAULT_MAX_TOKENS = 16_384
UNKNOWN_MODEL_MAX_TOKENS = 8_192
_CACHE = {"type": "ephemeral"}


@functools.lru_cache(maxsize=256)
def _model_facts(model_id: str) -> tuple[dict[str, Any], int]:
    profile = AnthropicProvider.model_profile(model_id) or {}
    schema = profiled_schema(profile)
    limit = profile.get("anthropic_max_output_tokens")
    if isinstance(limit, int) and limit > 0:
        max_tokens = min(limit, DEFAULT_MAX_TOKENS)
    elif model_id.startswith("claude-") and "-4" in model_id:
        max_tokens = DEFAULT_MAX_TOKENS
    else:
        max_tokens = UNKNOWN_MODEL_MAX_TOKENS
    return schema, max_tokens


def _messages(turns: tuple[Turn, ...], cache_turns: int = 0) -> list[dict[str, Any]]:
    """Anthropic wants non-empty blocks, a user turn first, and roles that alternate.

    The last block of the first `cache_turns` turns (the stable history prefix) is marked for
    caching: the next request reads everything up to it from the cache.
    """
    out: list[dict[str, Any]] = []
    marked: dict[str, Any] | None = None
    for index, turn in enumerate(turns):
        if index == cache_turns and out and out[-1]["role"] == "assistant":
            # The prefix ends with an answer; the new user turn starts a new message.
            marked = out[-1]["content"][-1]
        blocks: list[dict[str, Any]] = []
        for part in turn.parts:
            if isinstance(part, ImageInput):
                source = {"type": "base64", "media_type": part.media_type, "data": part.data}
                blocks.append({"type": "image", "source": source})
            elif part.strip():
                blocks.append({"type": "text", "text": part})
        if not blocks or (not out and turn.role == "assistant"):
            continue
        if out and out[-1]["role"] == turn.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": turn.role, "content": blocks})
    if marked is not None and cache_turns < len(turns):
        marked["cache_control"] = _CACHE
    return out


class AnthropicWire(SdkWire[AnthropicProvider]):
    path = "/v1/messages"

    def _new_provider(self, endpoint: Endpoint) -> AnthropicProvider:
        client = AsyncAnthropic(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            http_client=self._http,
            max_retries=0,
        )
        return AnthropicProvider(anthropic_client=client)

    def body(self, call: ModelCall, endpoint: Endpoint, mode: OutputMode) -> dict[str, Any]:
        schema, max_tokens = _model_facts(call.model_id)
        system = call.system if mode == "tool" else call.system + json_instructions(schema)
        body: dict[str, Any] = {
            "model": call.model_id,
            "max_tokens": call.sampling.max_tokens or max_tokens,
            "system": [{"type": "text", "text": system, "cache_control": _CACHE}],
            "messages": _messages(call.turns, call.cache_turns),
            "stream": True,
        }
        if mode == "tool":
            body["tools"] = [
                {
                    "name": TOOL_NAME,
                    "description": TOOL_DESCRIPTION,
                    "input_schema": schema,
                    "eager_input_streaming": True,
                    "cache_control": _CACHE,
                }
            ]
            body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        s = call.sampling
        if s.temperature is not None:
            # Anthropic's range is 0..1; the request schema allows OpenAI's 0..2.
            body["temperature"] = min(s.temperature, 1.0)
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if s.top_k is not None:
            body["top_k"] = s.top_k
        return body

    def parser(self, endpoint: Endpoint, mode: OutputMode, sink: AnswerSink) -> AnthropicParser:
        return AnthropicParser(mode, sink, endpoint.provider_name)


class AnthropicParser(AnswerParser):
    __slots__ = ("_block", "_usage")

    def __init__(self, mode: OutputMode, sink: AnswerSink, provider: str) -> None:
        super().__init__(mode, sink, provider)
        # Index of the content block that carries the answer (the first tool_use block).
        self._block: int | None = None
        self._usage: dict[str, int] = {}

    def feed(self, payload: bytes) -> None:
        obj = loads(payload)
        kind = obj.get("type")
        if kind == "content_block_delta":
            delta = obj["delta"]
            dtype = delta.get("type")
            if dtype == "input_json_delta":
                if obj.get("index") == self._block:
                    text = delta.get("partial_json")
                    if text:
                        self._emit(text)
            elif dtype == "text_delta":
                text = delta.get("text")
                if text:
                    if self._tool:
                        self._aside.append(text)
                    else:
                        self._emit(text)
        elif kind == "content_block_start":
            block = obj.get("content_block") or {}
            if self._block is None and block.get("type") == "tool_use":
                self._block = obj.get("index")
        elif kind == "message_start":
            usage = (obj.get("message") or {}).get("usage") or {}
            self._usage.update({k: v for k, v in usage.items() if isinstance(v, int)})
        elif kind == "message_delta":
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason:
                # The answer is complete; only message_stop may follow.
                self.stop_reason = reason
                self.complete = True
            usage = obj.get("usage") or {}
            self._usage.update({k: v for k, v in usage.items() if isinstance(v, int)})
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            # `event: error`, e.g. overloaded_error after message_start: its type decides.
            raise stream_error(self._provider, obj)

    def usage(self) -> Usage | None:
        u = self._usage
        if not u:
            return None
        read = u.get("cache_read_input_tokens", 0)
        write = u.get("cache_creation_input_tokens", 0)
        return Usage(
            input_tokens=u.get("input_tokens", 0) + read + write,
            output_tokens=u.get("output_tokens", 0),
            cache_read_tokens=read,
            cache_write_tokens=write,
        )
