"""The failover chain: a `ModelStreamer` that tries the next model when a provider fails.

The model a call names is tried first, then the chain's other steps: the platform's chain
(`FRAGMENTS_FAILOVER_CHAIN`, each step only when the platform has that provider's key) for a
call on the platform's keys, or the caller's own `fallbacks` (same provider, same key and base
URL) for a call on the caller's key. A caller's key or URL never fails over to the platform's.

A failure moves on only when it is the provider's (5xx, 529 overloaded, 429, a refused, reset or
TLS-broken connection, no first token in time, silence mid-answer, a stream cut short); a
request's own fault (a bad key, an invalid request) ends the answer as before.

- Before the first token the next model starts at once; the sink hears of it only through the
  `started` call of the model that answers (`fallback=True` and the reason).
- After the first token the sink is `reset` (the partials restart) and the attempt's usage is
  handed over as `abandoned`, to be charged to the model that consumed it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Protocol

import structlog

from fragments.config import Settings
from fragments.llm.catalogue import load_catalogue
from fragments.llm.errors import LLMError
from fragments.llm.pricing import cost_usd
from fragments.llm.providers import PROVIDERS, find_provider
from fragments.llm.types import (
    AnswerSink,
    Attempt,
    ChainStep,
    Fallback,
    ImageInput,
    ModelCall,
    ModelStreamer,
    StreamResult,
    Usage,
)
from fragments.llm.wire import estimate_input_tokens

log = structlog.get_logger(__name__)

# Codes that are the request's fault: the same request fails on any model, or is the caller's
# to fix (a key, a quota); never a reason to try another provider.
_NOT_TRIGGERS = frozenset(
    {"provider_auth", "provider_rejected", "invalid_output", "quota_exceeded", "internal"}
)
# A provider skipped because its gate (breaker, health) says it is failing right now.
UNHEALTHY = "unhealthy"


class GateTicket(Protocol):
    """One attempt the gate let through: hand its outcome back."""

    async def record(self, ok: bool, reason: str | None) -> None:
        """The attempt's outcome: `ok` unless the provider failed (`reason` says how)."""
        ...

    async def release(self) -> None:
        """The attempt ended without an outcome (cancelled)."""
        ...


class ProviderGate(Protocol):
    """Whether a provider should be tried now (a circuit breaker, a health check), and what
    each attempt on it came to."""

    async def admit(self, provider_id: str, *, force: bool) -> GateTicket | None:
        """A ticket for one attempt, or None to skip the provider. `force`: the last step
        left, tried whatever the gate thinks (a ticket is still given, to record it)."""
        ...


class _NoTicket:
    async def record(self, ok: bool, reason: str | None) -> None:
        return None

    async def release(self) -> None:
        return None


class OpenGate:
    """The default gate: every provider is tried; outcomes are not kept."""

    async def admit(self, provider_id: str, *, force: bool) -> GateTicket | None:
        return _NoTicket()


def parse_chain(text: str) -> tuple[ChainStep, ...]:
    """`provider:model,provider:model` (the model id may hold colons: `ollama:llama3:70b`);
    ValueError naming the bad step."""
    steps: list[ChainStep] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        provider, sep, model = item.partition(":")
        spec = find_provider(provider.strip().lower())
        if not sep or spec is None or not model.strip():
            raise ValueError(
                f"FRAGMENTS_FAILOVER_CHAIN: '{item[:80]}' is not <provider>:<model> with a "
                f"known provider ({', '.join(PROVIDERS)})."
            )
        steps.append(ChainStep(spec.id, model.strip()))
    return tuple(steps)


def failure_reason(exc: LLMError) -> str | None:
    """The failover reason for an error, or None when the error is not a provider's failure."""
    if exc.code in _NOT_TRIGGERS:
        return None
    if exc.failure is not None:
        return exc.failure
    if exc.code == "provider_rate_limited":
        return "rate_limited"
    if exc.code == "provider_timeout":
        return "stalled" if exc.after_content else "no_first_token"
    return "server_error"


def _has_images(call: ModelCall) -> bool:
    return any(isinstance(p, ImageInput) for turn in call.turns for p in turn.parts)


def _multimodal(step: ChainStep) -> bool:
    for model in load_catalogue():
        if model.id == step.model_id and model.provider_id == step.provider_id:
            return model.multimodal
    # A model outside the catalogue (a caller's server): its caller chose it.
    return True


class _Relay:
    """The sink of one attempt: counts the answer's characters, holds back `started` until the
    first token while another model is left to try (so a provider that fails before answering
    is never announced), and passes everything else through."""

    __slots__ = ("chars", "fallback", "hold", "pending", "sink")

    def __init__(self, sink: AnswerSink, fallback: Fallback | None, hold: bool) -> None:
        self.sink = sink
        self.fallback = fallback
        self.hold = hold
        self.pending: tuple[str, str] | None = None
        self.chars = 0

    def started(
        self, provider: str, model: str, fallback: bool, reason: Fallback | None = None
    ) -> None:
        if self.hold:
            self.pending = (provider, model)
        else:
            self.sink.started(provider, model, self.fallback is not None, self.fallback)

    def delta(self, text: str) -> None:
        if self.pending is not None:
            provider, model = self.pending
            self.pending = None
            self.sink.started(provider, model, self.fallback is not None, self.fallback)
        self.chars += len(text)
        self.sink.delta(text)

    def reset(self, reason: str) -> None:
        self.chars = 0
        self.sink.reset(reason)

    def abandoned(self, attempt: Attempt) -> None:
        self.sink.abandoned(attempt)


class FailoverStreamer:
    """A `ModelStreamer` over another (the direct one) that fails over along a chain."""

    def __init__(
        self,
        inner: ModelStreamer,
        settings: Settings,
        *,
        chain: Sequence[ChainStep] | None = None,
        gate: ProviderGate | None = None,
    ) -> None:
        self.inner = inner
        self.settings = settings
        self.chain = tuple(chain) if chain is not None else parse_chain(settings.failover_chain)
        self.gate: ProviderGate = gate or OpenGate()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def steps(self, call: ModelCall) -> list[ChainStep]:
        """The models to try for `call`, in order, the one it names first."""
        first = ChainStep(call.provider_id, call.model_id)
        own = call.api_key is not None or call.base_url is not None
        if own:
            # The caller's key or server: only their own chain, on the same provider (their
            # key is never sent to another provider, nor the platform's key to their URL).
            rest = [s for s in call.fallbacks or () if s.provider_id == call.provider_id]
        else:
            rest = [s for s in (self.chain if call.fallbacks is None else call.fallbacks)]
            rest = [s for s in rest if self._platform_serves(s)]
        if _has_images(call):
            rest = [s for s in rest if _multimodal(s)]
        steps = [first]
        for step in rest:
            if step not in steps:
                steps.append(step)
        return steps

    def _platform_serves(self, step: ChainStep) -> bool:
        spec = PROVIDERS[step.provider_id]
        return spec.keyless or spec.platform_key(self.settings) is not None

    async def stream(self, call: ModelCall, sink: AnswerSink) -> StreamResult:
        steps = self.steps(call)
        own = call.api_key is not None or call.base_url is not None
        previous: Fallback | None = None
        failed_providers: set[str] = set()
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            ticket: GateTicket | None = None
            if last or not (step.provider_id in failed_providers and not own):
                ticket = await self.gate.admit(step.provider_id, force=last)
                if ticket is None:
                    previous = previous or Fallback(UNHEALTHY, step.provider_id, step.model_id)
            if ticket is None:
                log.info("llm_step_skipped", provider=step.provider_id, model=step.model_id)
                continue
            attempt = dataclasses.replace(
                call,
                provider_id=step.provider_id,
                model_id=step.model_id,
                fallbacks=(),
                retries=None if last else 0,
            )
            relay = _Relay(sink, previous, hold=not last)
            # The one model of a call without fallbacks streams straight into the sink: no
            # relay on the per-chunk path (its characters are never needed).
            target: AnswerSink = sink if last and previous is None else relay
            try:
                result = await self.inner.stream(attempt, target)
            except LLMError as exc:
                reason = failure_reason(exc)
                await asyncio.shield(ticket.record(reason is None, reason))
                if reason is None or last:
                    raise
                spent = self._spent(attempt, exc, relay.chars)
                if relay.chars:
                    sink.reset(reason)
                if spent is not None:
                    sink.abandoned(spent)
                log.warning(
                    "llm_fallback",
                    from_provider=step.provider_id,
                    from_model=step.model_id,
                    reason=reason,
                    after_content=bool(relay.chars),
                )
                # Later steps on a provider that just failed are skipped (a platform chain
                # often names two models of one provider).
                failed_providers.add(step.provider_id)
                # The answering model's `started` names the FIRST model given up: the one the
                # caller asked for, and why it did not answer.
                previous = previous or Fallback(reason, step.provider_id, step.model_id)
                continue
            except BaseException:
                await asyncio.shield(ticket.release())
                raise
            await ticket.record(True, None)
            return result
        raise AssertionError("unreachable: the last step returns or raises")

    @staticmethod
    def _spent(call: ModelCall, exc: LLMError, chars: int) -> Attempt | None:
        """What an abandoned attempt consumed: as reported, else estimated once text came."""
        usage = exc.usage
        if usage is None:
            if not chars:
                return None
            usage = Usage(
                input_tokens=estimate_input_tokens(call), output_tokens=chars // 4, reported=False
            )
        cost = 0.0 if call.base_url else cost_usd(call.model_id, usage)
        return Attempt(call.provider_id, call.model_id, usage, cost)
