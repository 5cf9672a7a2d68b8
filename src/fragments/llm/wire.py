"""What every provider protocol implements, and helpers they share.

A wire opens one streamed request and hands back the raw response bytes; its parser turns each
SSE `data` payload into answer text (straight into the sink) and remembers usage and the stop
reason. Per chunk that is one `json.loads` and one `sink.delta` call: everything else (partial
validation, SSE out) happens on the chat layer's timer.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pydantic_core

from fragments.llm.providers import Endpoint, OutputMode
from fragments.llm.types import AnswerSink, ImageInput, ModelCall, Usage
from fragments.schemas import Fragment

if TYPE_CHECKING:
    from pydantic_ai.profiles import ModelProfile

TOOL_NAME = "fragment"
TOOL_DESCRIPTION = "Write the fragment: the app or notebook cell, with its complete code."

# pydantic-core's Rust parser: ~2 µs for a typical chunk where json.loads takes ~9 µs.
loads: Callable[[bytes], Any] = pydantic_core.from_json


class Parser(Protocol):
    # True once the first piece of the answer went to the sink (switches the first-token
    # timeout to the idle timeout).
    content_seen: bool
    # Characters of answer text so far, for estimating output tokens.
    chars: int
    stop_reason: str | None
    # The answer's text is complete: a stop reason came ([DONE], Anthropic's stop_reason or
    # message_stop, OpenAI's finish_reason, Gemini's finishReason). What may still follow is only
    # trailers (usage, [DONE]); a stream that stalls or breaks now still delivers the answer.
    complete: bool

    def feed(self, payload: bytes) -> None:
        """Handle one SSE data payload; raise `LLMError` for an error the stream reports (even
        in a chunk that also carries usage or choices)."""

    def finish(self) -> None:
        """The stream ended: hand over anything held back (e.g. text beside a missing tool call)."""

    def usage(self) -> Usage | None:
        """Usage as the provider reported it, or None."""


@dataclass(frozen=True, slots=True)
class WireRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class Wire(Protocol):
    def request(self, call: ModelCall, endpoint: Endpoint, mode: OutputMode) -> WireRequest:
        """The HTTP request that asks this provider for a streamed answer."""

    def parser(self, endpoint: Endpoint, mode: OutputMode, sink: AnswerSink) -> Parser:
        """A parser for one response of this protocol."""


def fragment_schema() -> dict[str, Any]:
    """The Fragment JSON schema, a fresh copy (transformers edit in place)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


# Said once, in the system prompt, rather than in every field: the schema is sent on every
# request (tool definitions count as input tokens).
_UNSENT_KEYS = frozenset({"title", "description", "default"})


def _compact(node: Any) -> Any:
    """The schema without titles, descriptions and defaults (a `properties` map's keys are field
    names, kept whatever they are called)."""
    if isinstance(node, list):
        return [_compact(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _compact(field) for name, field in value.items()}
        elif key not in _UNSENT_KEYS:
            out[key] = _compact(value)
    return out


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """`$ref`s replaced by their definitions (FileEntry is used once; the indirection only
    costs tokens)."""
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and len(node) == 1:
        return _inline(defs[ref.removeprefix("#/$defs/")], defs)
    return {k: _inline(v, defs) for k, v in node.items()}


@functools.cache
def _schema_text() -> str:
    schema = _compact(Fragment.model_json_schema())
    defs = schema.pop("$defs", {})
    return json.dumps(_inline(schema, defs))


def profiled_schema(profile: ModelProfile | None) -> dict[str, Any]:
    """The Fragment schema as a model's pydantic-ai profile wants it (its JSON-schema
    transformer applied, when it has one)."""
    schema = fragment_schema()
    transformer = (profile or {}).get("json_schema_transformer")
    if transformer is not None:
        schema = transformer(schema, strict=None).walk()
    return schema


def put_given(target: dict[str, Any], *fields: tuple[str, float | int | None]) -> None:
    """Set each named sampling value the caller gave; a provider's own default stands for the
    rest."""
    for name, value in fields:
        if value is not None:
            target[name] = value


def json_instructions(schema: dict[str, Any]) -> str:
    """Appended to the system prompt when the answer comes as message content."""
    return (
        "\n\nAnswer with one JSON object and nothing else (no prose, no code fences). It must "
        "match this JSON schema, with the keys in this order:\n" + json.dumps(schema)
    )


def estimate_input_tokens(call: ModelCall, extra_chars: int = 0) -> int:
    """Characters / 4 of the prompt, plus a flat guess per image."""
    chars = len(call.system) + extra_chars
    images = 0
    for turn in call.turns:
        for part in turn.parts:
            if isinstance(part, ImageInput):
                images += 1
            else:
                chars += len(part)
    return chars // 4 + images * 800


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
