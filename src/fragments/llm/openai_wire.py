"""OpenAI chat completions, for OpenAI and every OpenAI-compatible provider.

pydantic-ai builds and configures the client (`OpenAIProvider` around an `AsyncOpenAI` with our
pooled HTTP client and no SDK retries) and supplies each model's JSON-schema transformer. The
client's base URL and headers make the request; the stream itself is read raw (see h1.py and
streamer.py): the SDK's chunk objects and pydantic-ai's agent events cost far more per chunk than
one `json.loads`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, cast

from openai import AsyncOpenAI
from pydantic_ai.profiles import ModelProfile
from pydantic_ai.providers.openai import OpenAIProvider

from fragments.llm.answer_parser import AnswerParser
from fragments.llm.faults import stream_error
from fragments.llm.providers import PROVIDERS, Endpoint, OutputMode, ProviderSpec
from fragments.llm.sdk_clients import SdkWire
from fragments.llm.types import AnswerSink, ImageInput, ModelCall, Usage
from fragments.llm.wire import (
    TOOL_DESCRIPTION,
    TOOL_NAME,
    json_instructions,
    loads,
    profiled_schema,
    put_given,
)


@functools.cache
def _profile_of(location: str) -> Callable[[str], ModelProfile | None]:
    """A spec's `module:attribute` profile function (imported with this wire, not before)."""
    module, _, path = location.partition(":")
    target: object = importlib.import_module(module)
    for name in path.split("."):
        target = getattr(target, name)
    return cast("Callable[[str], ModelProfile | None]", target)


# Loaded with this module (in the start-up warm-up thread), as the SDKs are, not on a request.
for _spec in PROVIDERS.values():
    if _spec.protocol == "openai":
        _profile_of(_spec.profile)


@functools.lru_cache(maxsize=256)
def _schema(spec: ProviderSpec, model_id: str) -> dict[str, Any]:
    return profiled_schema(_profile_of(spec.profile)(model_id))


class OpenAIWire(SdkWire[OpenAIProvider]):
    path = "/chat/completions"

    def _new_provider(self, endpoint: Endpoint) -> OpenAIProvider:
        client = AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            http_client=self._http,
            # Retries are ours (before the first token only), so failover can own them later.
            max_retries=0,
        )
        return OpenAIProvider(openai_client=client)

    def body(self, call: ModelCall, endpoint: Endpoint, mode: OutputMode) -> dict[str, Any]:
        schema = _schema(endpoint.spec, call.model_id)
        system = call.system if mode == "tool" else call.system + json_instructions(schema)
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        for turn in call.turns:
            if turn.role == "assistant" or all(isinstance(p, str) for p in turn.parts):
                text = "\n\n".join(p for p in turn.parts if isinstance(p, str))
                messages.append({"role": turn.role, "content": text})
            else:
                content: list[dict[str, Any]] = []
                for part in turn.parts:
                    if isinstance(part, ImageInput):
                        url = f"data:{part.media_type};base64,{part.data}"
                        content.append({"type": "image_url", "image_url": {"url": url}})
                    else:
                        content.append({"type": "text", "text": part})
                messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {
            "model": call.model_id,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if mode == "tool":
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": TOOL_NAME,
                        "description": TOOL_DESCRIPTION,
                        "parameters": schema,
                    },
                }
            ]
            # The named form is the one every compatible provider documents.
            body["tool_choice"] = {"type": "function", "function": {"name": TOOL_NAME}}
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": TOOL_NAME, "schema": schema},
            }
        s = call.sampling
        # A caller's URL is some compatible server, whichever provider the request names.
        spec = endpoint.spec
        classic = endpoint.user_url
        put_given(
            body,
            ("temperature", s.temperature),
            ("top_p", s.top_p),
            ("max_tokens" if classic else spec.max_tokens_field, s.max_tokens),
            ("frequency_penalty", s.frequency_penalty),
            ("presence_penalty", s.presence_penalty),
            ("top_k", s.top_k if classic or spec.top_k else None),
        )
        return body

    def parser(self, endpoint: Endpoint, mode: OutputMode, sink: AnswerSink) -> OpenAIParser:
        return OpenAIParser(mode, sink, endpoint.provider_name)


class OpenAIParser(AnswerParser):
    __slots__ = ("_usage",)

    def __init__(self, mode: OutputMode, sink: AnswerSink, provider: str) -> None:
        super().__init__(mode, sink, provider)
        self._usage: dict[str, Any] | None = None

    def feed(self, payload: bytes) -> None:
        if payload.startswith(b"[DONE]"):
            self.complete = True
            return
        obj = loads(payload)
        if obj.get("error"):
            # Checked first: OpenRouter's error chunk also carries `choices` (finish_reason
            # "error") and may carry `usage`; neither makes it an answer.
            self._fail(obj)
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                if self._tool:
                    calls = delta.get("tool_calls")
                    if calls:
                        call = calls[0]
                        fn = call.get("function")
                        if fn and call.get("index", 0) == 0:
                            args = fn.get("arguments")
                            if args:
                                self._emit(args)
                    content = delta.get("content")
                    if content:
                        self._aside.append(content)
                else:
                    content = delta.get("content")
                    if content:
                        self._emit(content)
            reason = choice.get("finish_reason")
            if reason:
                if reason == "error":
                    self._fail(obj)
                # The answer's text is complete; only the usage chunk and [DONE] may follow.
                self.stop_reason = reason
                self.complete = True
        usage = obj.get("usage")
        if usage:
            self._usage = usage

    def _fail(self, obj: dict[str, Any]) -> None:
        usage = obj.get("usage")
        if usage:
            self._usage = usage
        raise stream_error(self._provider, obj)

    def usage(self) -> Usage | None:
        u = self._usage
        if not u:
            return None
        details = u.get("prompt_tokens_details") or {}
        return Usage(
            input_tokens=int(u.get("prompt_tokens") or 0),
            output_tokens=int(u.get("completion_tokens") or 0),
            cache_read_tokens=int(details.get("cached_tokens") or 0),
        )
