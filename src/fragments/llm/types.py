"""What the chat layer hands the model layer, and what comes back.

Kept free of SDK imports: the chat endpoint, tests and future wrappers (failover, cache, routing)
depend on these types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

# Every provider the app knows: the ids of the ProviderSpec records in llm/providers.py (a
# test keeps the two the same set).
ProviderId = Literal[
    "anthropic",
    "openai",
    "google",
    "mistral",
    "groq",
    "fireworks",
    "togetherai",
    "xai",
    "deepseek",
    "ollama",
]
Role = Literal["user", "assistant"]
# morph: Morph merged the model's edit; search_replace: applied here; rewrite: the edit did not
# apply and the model wrote the whole program again; model_rewrite: asked for an edit, the model
# wrote the whole program anyway.
EditOutcome = Literal["morph", "search_replace", "rewrite", "model_rewrite"]


@dataclass(frozen=True, slots=True)
class ImageInput:
    """An image sent to a multimodal model, base64 without the `data:` prefix."""

    media_type: str
    data: str


Part = str | ImageInput


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation in provider-neutral form (text and images, in order)."""

    role: Role
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None


@dataclass(frozen=True, slots=True)
class ChainStep:
    """One model of a failover chain."""

    provider_id: ProviderId
    model_id: str


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One answer to produce: which model, the prompt, and the caller's connection overrides."""

    provider_id: ProviderId
    model_id: str
    system: str
    turns: tuple[Turn, ...]
    sampling: Sampling = field(default_factory=Sampling)
    # From the request's config: a user base URL means the platform's keys are never used.
    api_key: str | None = None
    base_url: str | None = None
    # The first `cache_turns` turns stay identical on the next request (history windowing):
    # wires with explicit prompt caching mark the end of that prefix.
    cache_turns: int = 0
    # The models to fail over to after this one: None means the platform's chain (only ever
    # for calls on the platform's keys); () means none.
    fallbacks: tuple[ChainStep, ...] | None = None
    # Retries on the same model before the first token; None means the setting. A failover
    # chain asks for none while another model is left to try.
    retries: int | None = None


@dataclass(slots=True)
class Usage:
    """Token counts of one answer; `input_tokens` includes cache reads and writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    # False when the provider reported nothing and the counts are estimates (characters / 4).
    reported: bool = True


@dataclass(frozen=True, slots=True)
class StreamResult:
    provider: str
    model: str
    usage: Usage
    # The provider's stop reason as it said it ("stop", "tool_use", "length", "MAX_TOKENS", ...).
    stop_reason: str | None
    # True when the answer was cut by the output token limit.
    truncated: bool = False
    cost_usd: float = 0.0
    # Set by a wrapper that changed the answer after it streamed (an edit merged into the current
    # code): the final answer's JSON text, used instead of what the sink received.
    text: str | None = None
    # How an edit of the current fragment was carried out (see chat/edits.py); None otherwise.
    edit: EditOutcome | None = None


@dataclass(frozen=True, slots=True)
class Fallback:
    """Why the model now answering is not the one asked for: the model given up, and how it
    failed (a code such as `server_error`, `overloaded`, `rate_limited`, `connection_failed`,
    `no_first_token`, `stalled`; see `llm/failover.py`)."""

    reason: str
    provider: str
    model: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """An attempt a failover chain gave up after it consumed tokens (or an edit that did not
    apply, or Morph's merge of one): what it cost, charged to the model that consumed them."""

    provider: str
    model: str
    usage: Usage
    cost_usd: float

    @property
    def label(self) -> str:
        """`provider/model`, as usage records name a model."""
        return f"{self.provider}/{self.model}"


class AnswerSink(Protocol):
    """Receives an answer as it streams. Methods are called from the streaming task and must
    not block: `delta` runs once per provider chunk, so it should only append."""

    def started(
        self, provider: str, model: str, fallback: bool, reason: Fallback | None = None
    ) -> None:
        """A model accepted the request and is about to answer; `reason` says why it is a
        fallback (given whenever `fallback` is true)."""

    def delta(self, text: str) -> None:
        """The next piece of the answer's JSON text."""

    def reset(self, reason: str) -> None:
        """Drop everything received so far: another attempt restarts the answer."""

    def abandoned(self, attempt: Attempt) -> None:
        """An attempt that consumed tokens was given up for another model, or a helper call
        made for the answer (Morph merging an edit): record its usage beside the answer's."""


class ModelStreamer(Protocol):
    """The seam between the chat endpoint and models. Failover chains, circuit breakers,
    a response cache and routing wrap this interface without touching the endpoint."""

    async def stream(self, call: ModelCall, sink: AnswerSink) -> StreamResult:
        """Stream one answer into `sink`; raise `LLMError` when it cannot be produced."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
