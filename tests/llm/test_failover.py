"""The failover chain at the wire: every trigger before and after the first token, for each
protocol as the failing primary; what is not a trigger; own keys; the gate seam."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from fragments.config import Settings
from fragments.llm.breaker_gate import BreakerGate, breaker_name
from fragments.llm.errors import LLMError
from fragments.llm.failover import FailoverStreamer, failure_reason, parse_chain
from fragments.llm.streamer import DirectStreamer
from fragments.llm.types import Attempt, ChainStep, Fallback, ImageInput, ModelCall, Turn
from fragments.resilience import BreakerConfig, BreakerRegistry
from tests.fakes import (
    SAMPLE_FRAGMENT,
    ErrorReply,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    FakeProvider,
    FragmentReply,
    Reply,
    StreamError,
)

pytestmark = pytest.mark.anyio

# The model each protocol's primary is asked for, and the provider that takes over.
MODELS = {"openai": "gpt-4.1", "anthropic": "claude-sonnet-5-5", "google": "gemini-2.5-pro"}
NEXT = {"openai": "anthropic", "anthropic": "google", "google": "openai"}
TIMEOUT = 0.6


@dataclass
class Sink:
    """Records what the chain tells the chat layer."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    text: str = ""
    spent: list[Attempt] = field(default_factory=list)

    def started(
        self, provider: str, model: str, fallback: bool, reason: Fallback | None = None
    ) -> None:
        self.events.append(("started", (provider, model, fallback, reason)))

    def delta(self, text: str) -> None:
        if not self.events or self.events[-1][0] != "text":
            self.events.append(("text", None))
        self.text += text

    def reset(self, reason: str) -> None:
        self.text = ""
        self.events.append(("reset", reason))

    def abandoned(self, attempt: Attempt) -> None:
        self.spent.append(attempt)


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeProvider]]:
    with FakeOpenAI() as o, FakeAnthropic() as a, FakeGemini() as g:
        yield {"openai": o, "anthropic": a, "google": g}  # type: ignore[dict-item]


@pytest.fixture
def providers(fakes: dict[str, FakeProvider]) -> Iterator[dict[str, FakeProvider]]:
    for fake in fakes.values():
        fake.reset()
    yield fakes
    for fake in fakes.values():
        fake.reset()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(fakes: dict[str, FakeProvider], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_api_key": "platform-openai",
        "openai_base_url": fakes["openai"].base_url,
        "anthropic_api_key": "platform-anthropic",
        "anthropic_base_url": fakes["anthropic"].base_url,
        "google_api_key": "platform-google",
        "google_base_url": fakes["google"].base_url,
        "first_event_timeout_seconds": TIMEOUT,
        "stream_idle_timeout_seconds": TIMEOUT,
        "provider_retries": 1,
        "failover_chain": "openai:gpt-4.1,anthropic:claude-sonnet-5-5,google:gemini-2.5-pro",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def chain(settings: Settings, **kwargs: Any) -> AsyncIterator[FailoverStreamer]:
    streamer = FailoverStreamer(DirectStreamer(settings), settings, **kwargs)
    try:
        yield streamer
    finally:
        await streamer.aclose()


def call_for(provider: str, **kwargs: Any) -> ModelCall:
    return ModelCall(
        provider,  # type: ignore[arg-type]
        MODELS[provider],
        "Write a fragment.",
        (Turn("user", ("a loan calculator",)),),
        **kwargs,
    )


def started_events(sink: Sink) -> list[Any]:
    return [data for name, data in sink.events if name == "started"]


# ---- before the first token -------------------------------------------------------------------

BEFORE: dict[str, tuple[Reply | None, str]] = {
    "http_500": (ErrorReply(500, "internal error"), "server_error"),
    "http_503": (ErrorReply(503, "unavailable"), "server_error"),
    "http_529": (ErrorReply(529, "Overloaded"), "overloaded"),
    "http_429": (ErrorReply(429, "slow down"), "rate_limited"),
    "error_in_stream": (FragmentReply(error=StreamError(500, after=0)), "server_error"),
    "overloaded_in_stream": (
        FragmentReply(error=StreamError(529, "Overloaded", after=0)),
        "overloaded",
    ),
    "stall": (FragmentReply(stall_after=0), "no_first_token"),
    "refused": (None, "connection_failed"),
    "tls": (None, "tls_error"),
}


@pytest.mark.parametrize("primary", list(MODELS))
@pytest.mark.parametrize("trigger", list(BEFORE))
async def test_before_the_first_token_the_next_model_answers_at_once(
    providers: dict[str, FakeProvider], primary: str, trigger: str
) -> None:
    reply, reason = BEFORE[trigger]
    if trigger == "overloaded_in_stream" and primary == "openai":
        reason = "server_error"  # OpenAI's error types have no "overloaded"
    overrides: dict[str, Any] = {}
    if trigger == "refused":
        overrides[f"{primary}_base_url"] = f"http://127.0.0.1:{closed_port()}"
    elif trigger == "tls":
        # TLS to a server speaking plain HTTP: the handshake fails.
        url = providers[primary].base_url.replace("http://", "https://")
        overrides[f"{primary}_base_url"] = url
    elif reply is not None:
        providers[primary].script(reply)
    fallback = NEXT[primary]
    providers[fallback].script(FragmentReply(chunk_size=50))
    settings = settings_for(providers, **overrides)
    sink = Sink()
    async with chain(settings) as streamer:
        result = await streamer.stream(call_for(primary), sink)

    assert (result.provider, result.model) == (fallback, MODELS[fallback])
    assert json.loads(sink.text) == SAMPLE_FRAGMENT
    # Visible only in the one `started` of the model that answers: no reset, no other start.
    assert sink.events[0] == (
        "started",
        (fallback, MODELS[fallback], True, Fallback(reason, primary, MODELS[primary])),
    )
    assert [name for name, _ in sink.events] == ["started", "text"]
    # Nothing to estimate before a token; only usage a provider reported (Anthropic's
    # message_start counts the input it read) is charged to the model given up.
    assert all(a.usage.reported and a.provider == primary for a in sink.spent)
    if reply is not None:
        # No retry on the failing provider while another model is left.
        assert len(providers[primary].requests) == 1


# ---- after the first token --------------------------------------------------------------------

AFTER: dict[str, tuple[FragmentReply, str]] = {
    "stall": (FragmentReply(stall_after=3, chunk_size=40), "stalled"),
    "reset": (FragmentReply(drop_after=3, chunk_size=40), "connection_lost"),
    "close": (FragmentReply(drop_after=3, drop="close", chunk_size=40), "connection_lost"),
    "cut": (FragmentReply(cut_after=3, chunk_size=40, usage=False), "stream_cut"),
    "error_in_stream": (
        FragmentReply(chunk_size=40, error=StreamError(503, "busy", after=3)),
        "server_error",
    ),
}


@pytest.mark.parametrize("primary", list(MODELS))
@pytest.mark.parametrize("trigger", list(AFTER))
async def test_mid_answer_the_answer_restarts_on_the_next_model(
    providers: dict[str, FakeProvider], primary: str, trigger: str
) -> None:
    reply, reason = AFTER[trigger]
    providers[primary].script(reply)
    fallback = NEXT[primary]
    providers[fallback].script(FragmentReply(chunk_size=50))
    settings = settings_for(providers)
    sink = Sink()
    async with chain(settings) as streamer:
        result = await streamer.stream(call_for(primary), sink)

    assert (result.provider, result.model) == (fallback, MODELS[fallback])
    assert json.loads(sink.text) == SAMPLE_FRAGMENT  # the partial answer was dropped
    assert [name for name, _ in sink.events] == ["started", "text", "reset", "started", "text"]
    assert sink.events[0][1] == (primary, MODELS[primary], False, None)
    assert sink.events[2] == ("reset", reason)
    assert sink.events[3][1] == (
        fallback,
        MODELS[fallback],
        True,
        Fallback(reason, primary, MODELS[primary]),
    )
    # The given-up attempt's tokens are the primary's to pay: estimated (characters / 4)
    # unless the provider reported usage.
    [spent] = sink.spent
    assert (spent.provider, spent.model) == (primary, MODELS[primary])
    assert spent.usage.output_tokens > 0
    assert spent.cost_usd > 0


# ---- not triggers -----------------------------------------------------------------------------


@pytest.mark.parametrize("primary", list(MODELS))
@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (ErrorReply(401, "invalid x-api-key"), "provider_auth"),
        (ErrorReply(403, "forbidden"), "provider_auth"),
        (ErrorReply(400, "invalid request: messages too long"), "provider_rejected"),
        (ErrorReply(404, "model not found"), "provider_rejected"),
    ],
)
async def test_the_requests_own_fault_is_not_a_trigger(
    providers: dict[str, FakeProvider], primary: str, reply: ErrorReply, code: str
) -> None:
    providers[primary].script(reply)
    sink = Sink()
    async with chain(settings_for(providers)) as streamer:
        with pytest.raises(LLMError) as caught:
            await streamer.stream(call_for(primary), sink)
    assert caught.value.code == code
    for name, fake in providers.items():
        if name != primary:
            assert fake.requests == []


# ---- whose keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("own", ["api_key", "base_url"])
async def test_a_callers_own_key_never_fails_over_to_the_platforms(
    providers: dict[str, FakeProvider], own: str
) -> None:
    primary = providers["openai"]
    primary.script(ErrorReply(503, "down"))
    kwargs = (
        {"api_key": "user-key"}
        if own == "api_key"
        else {"api_key": "user-key", "base_url": primary.base_url}
    )
    sink = Sink()
    async with chain(settings_for(providers, provider_retries=0)) as streamer:
        with pytest.raises(LLMError) as caught:
            await streamer.stream(call_for("openai", **kwargs), sink)
    assert caught.value.code == "provider_unavailable"
    assert providers["anthropic"].requests == []
    assert providers["google"].requests == []


async def test_a_callers_own_chain_uses_only_their_key_and_url(
    providers: dict[str, FakeProvider],
) -> None:
    user_server = providers["openai"]
    user_server.script(ErrorReply(502, "bad gateway"), FragmentReply())
    call = call_for(
        "openai",
        api_key="user-key",
        base_url=user_server.base_url,
        # Another provider's step is never taken with the caller's key.
        fallbacks=(ChainStep("anthropic", "claude-sonnet-5-5"), ChainStep("openai", "my-model")),
    )
    sink = Sink()
    async with chain(settings_for(providers)) as streamer:
        result = await streamer.stream(call, sink)
    assert (result.provider, result.model) == ("openai", "my-model")
    first, second = user_server.requests
    assert first.json["model"] == "gpt-4.1"
    assert second.json["model"] == "my-model"
    assert {r.authorization for r in (first, second)} == {"Bearer user-key"}
    assert providers["anthropic"].requests == []
    assert result.cost_usd == 0.0  # the caller's server: nothing charged at list price


async def test_a_step_without_a_platform_key_is_left_out(
    providers: dict[str, FakeProvider],
) -> None:
    providers["openai"].script(ErrorReply(500))
    providers["google"].script(FragmentReply())
    settings = settings_for(providers, anthropic_api_key=None)
    async with chain(settings) as streamer:
        assert [s.provider_id for s in streamer.steps(call_for("openai"))] == [
            "openai",
            "google",
        ]
        result = await streamer.stream(call_for("openai"), Sink())
    assert result.provider == "google"
    assert providers["anthropic"].requests == []


async def test_a_requests_own_chain_replaces_the_platforms(
    providers: dict[str, FakeProvider],
) -> None:
    providers["openai"].script(ErrorReply(500))
    providers["google"].script(FragmentReply())
    call = call_for("openai", fallbacks=(ChainStep("google", "gemini-2.5-flash"),))
    async with chain(settings_for(providers)) as streamer:
        result = await streamer.stream(call, Sink())
    assert (result.provider, result.model) == ("google", "gemini-2.5-flash")
    assert providers["anthropic"].requests == []


async def test_no_fallbacks_means_one_model(providers: dict[str, FakeProvider]) -> None:
    providers["openai"].script(ErrorReply(500), ErrorReply(500))
    async with chain(settings_for(providers, provider_retries=1)) as streamer:
        with pytest.raises(LLMError) as caught:
            await streamer.stream(call_for("openai", fallbacks=()), Sink())
    assert caught.value.code == "provider_unavailable"
    # The last model left keeps its usual retry.
    assert len(providers["openai"].requests) == 2


async def test_when_every_model_fails_the_last_error_is_reported(
    providers: dict[str, FakeProvider],
) -> None:
    providers["openai"].script(ErrorReply(500))
    providers["anthropic"].script(ErrorReply(529, "Overloaded"))
    providers["google"].script(FragmentReply(stall_after=0))
    sink = Sink()
    async with chain(settings_for(providers, provider_retries=0)) as streamer:
        with pytest.raises(LLMError) as caught:
            await streamer.stream(call_for("openai"), sink)
    assert caught.value.code == "provider_timeout"
    # The last model is announced as it starts (it may be slow), naming the first failure.
    assert started_events(sink) == [
        ("google", "gemini-2.5-pro", True, Fallback("server_error", "openai", "gpt-4.1"))
    ]


async def test_later_steps_on_a_provider_that_failed_are_skipped(
    providers: dict[str, FakeProvider],
) -> None:
    providers["anthropic"].script(ErrorReply(503))
    providers["openai"].script(FragmentReply())
    settings = settings_for(providers, failover_chain="anthropic:claude-sonnet-5-5,openai:gpt-4.1")
    call = ModelCall("anthropic", "claude-opus-5-5", "s", (Turn("user", ("hi",)),))
    async with chain(settings) as streamer:
        result = await streamer.stream(call, Sink())
    assert result.provider == "openai"
    assert len(providers["anthropic"].requests) == 1  # sonnet was not tried after opus failed


async def test_images_skip_models_that_cannot_see_them(
    providers: dict[str, FakeProvider],
) -> None:
    settings = settings_for(
        providers,
        failover_chain="mistral:codestral-latest,google:gemini-2.5-pro",
        mistral_api_key="platform-mistral",
    )
    image = ImageInput("image/png", "iVBORw0KGgo=")
    call = ModelCall("openai", "gpt-4.1", "s", (Turn("user", ("what is this", image)),))
    async with chain(settings) as streamer:
        assert [s.provider_id for s in streamer.steps(call)] == ["openai", "google"]


# ---- the gate ---------------------------------------------------------------------------------


def registry(failures: int = 2) -> BreakerRegistry:
    """Breakers in this process's memory that open after `failures` failures."""
    return BreakerRegistry(BreakerConfig(failures=failures, window_seconds=60, open_seconds=60))


async def open_breaker(breakers: BreakerRegistry, provider: str) -> None:
    breaker = breakers.breaker(breaker_name(provider))
    for _ in range(breakers.config.failures):
        await breaker.record_failure(await breaker.allow())
    assert await breaker.state() == "open"


async def test_a_provider_whose_breaker_is_open_is_skipped(
    providers: dict[str, FakeProvider],
) -> None:
    providers["anthropic"].script(FragmentReply())
    breakers = registry()
    await open_breaker(breakers, "openai")
    sink = Sink()
    async with chain(settings_for(providers), gate=BreakerGate(breakers)) as streamer:
        result = await streamer.stream(call_for("openai"), sink)
    assert result.provider == "anthropic"
    assert providers["openai"].requests == []
    assert started_events(sink)[0][3] == Fallback("unhealthy", "openai", "gpt-4.1")


async def test_the_last_step_is_tried_even_when_its_breaker_is_open(
    providers: dict[str, FakeProvider],
) -> None:
    providers["openai"].script(FragmentReply())
    breakers = registry()
    await open_breaker(breakers, "openai")
    call = call_for("openai", fallbacks=())
    async with chain(settings_for(providers), gate=BreakerGate(breakers)) as streamer:
        result = await streamer.stream(call, Sink())
    assert result.provider == "openai"
    assert len(providers["openai"].requests) == 1


async def test_every_attempt_counts_in_its_providers_breaker(
    providers: dict[str, FakeProvider],
) -> None:
    breakers = registry(failures=2)
    gate = BreakerGate(breakers)
    async with chain(settings_for(providers), gate=gate) as streamer:
        for _ in range(2):
            providers["openai"].script(ErrorReply(503))
            providers["anthropic"].script(FragmentReply())
            assert (await streamer.stream(call_for("openai"), Sink())).provider == "anthropic"
        # Two failures opened OpenAI's breaker: the third request does not reach it.
        providers["anthropic"].script(FragmentReply())
        assert (await streamer.stream(call_for("openai"), Sink())).provider == "anthropic"
    assert len(providers["openai"].requests) == 2
    assert await breakers.breaker(breaker_name("openai")).state() == "open"
    assert await breakers.breaker(breaker_name("anthropic")).state() == "closed"


async def test_a_refused_key_does_not_count_against_the_provider(
    providers: dict[str, FakeProvider],
) -> None:
    breakers = registry(failures=1)
    async with chain(settings_for(providers), gate=BreakerGate(breakers)) as streamer:
        providers["openai"].script(ErrorReply(401))
        with pytest.raises(LLMError):
            await streamer.stream(call_for("openai"), Sink())
    # The request's own fault: the provider answered, so its breaker stays closed.
    assert await breakers.breaker(breaker_name("openai")).state() == "closed"


@dataclass
class Checked:
    status: str


@dataclass
class HealthChecks:
    """Health as the checks left it (the board itself is tested with the health module)."""

    states: dict[str, str] = field(default_factory=dict)

    async def status(self, provider_id: str) -> Checked | None:
        state = self.states.get(provider_id)
        return Checked(state) if state else None


async def test_a_provider_whose_health_is_down_is_skipped_unless_last(
    providers: dict[str, FakeProvider],
) -> None:
    health = HealthChecks({"openai": "down", "anthropic": "degraded"})
    gate = BreakerGate(registry(), health)
    providers["anthropic"].script(FragmentReply())
    sink = Sink()
    async with chain(settings_for(providers), gate=gate) as streamer:
        result = await streamer.stream(call_for("openai"), sink)
        assert result.provider == "anthropic"  # degraded is still tried
        assert providers["openai"].requests == []
        assert started_events(sink)[0][3] == Fallback("unhealthy", "openai", "gpt-4.1")
        # The only model left is tried whatever its health.
        providers["openai"].script(FragmentReply())
        result = await streamer.stream(call_for("openai", fallbacks=()), Sink())
        assert result.provider == "openai"


# ---- settings ---------------------------------------------------------------------------------


def test_the_chain_setting_parses_and_refuses_nonsense() -> None:
    assert parse_chain(" anthropic:claude-sonnet-5-5 , ollama:llama3.3:70b,") == (
        ChainStep("anthropic", "claude-sonnet-5-5"),
        ChainStep("ollama", "llama3.3:70b"),
    )
    assert parse_chain("") == ()
    for bad in ("anthropic", "nobody:model", "openai:"):
        with pytest.raises(ValueError, match="FRAGMENTS_FAILOVER_CHAIN"):
            parse_chain(bad)


def test_the_default_chain_names_catalogue_models() -> None:
    from fragments.llm.catalogue import load_catalogue

    known = {(m.provider_id, m.id) for m in load_catalogue()}
    steps = parse_chain(Settings(_env_file=None).failover_chain)  # type: ignore[call-arg]
    assert [s.provider_id for s in steps] == ["anthropic", "openai", "google"]
    assert all((s.provider_id, s.model_id) in known for s in steps)


def test_which_errors_are_triggers() -> None:
    assert failure_reason(LLMError("provider_auth", "bad key", status=401)) is None
    assert failure_reason(LLMError("provider_rejected", "bad", status=400)) is None
    assert failure_reason(LLMError("invalid_output", "bad")) is None
    out_of_quota = LLMError("provider_rate_limited", "no quota", status=429)
    assert failure_reason(out_of_quota) == "rate_limited"
