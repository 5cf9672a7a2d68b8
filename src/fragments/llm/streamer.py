"""The direct model streamer: one provider, its wire protocol, timeouts and early retries.

Anything that decides which model answers (a failover chain, a circuit breaker) wraps this one as
another `ModelStreamer`; the chat endpoint never changes.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import math
import random
import ssl
import threading
import time
from collections.abc import Callable

import httpx2
import structlog

from fragments.config import Settings
from fragments.llm.errors import Failure, LLMError
from fragments.llm.faults import http_error
from fragments.llm.h1 import H1Transport, HTTPError, Httpx2Transport, Transport, proxies_configured
from fragments.llm.pricing import cost_usd
from fragments.llm.providers import Endpoint, OutputMode, WireProtocol, resolve_endpoint
from fragments.llm.sse import SSEDecoder
from fragments.llm.types import AnswerSink, ModelCall, StreamResult, Usage
from fragments.llm.wire import Parser, Wire, estimate_input_tokens

log = structlog.get_logger(__name__)

# Each SDK takes seconds to import; a protocol is loaded the first time it is used.
_WIRES: dict[WireProtocol, tuple[str, str]] = {
    "openai": ("fragments.llm.openai_wire", "OpenAIWire"),
    "anthropic": ("fragments.llm.anthropic_wire", "AnthropicWire"),
    "google": ("fragments.llm.gemini_wire", "GeminiWire"),
}
_TRUNCATED = frozenset({"length", "max_tokens", "MAX_TOKENS"})
# Once the answer is complete only trailers are owed (OpenAI's usage chunk and [DONE], Anthropic's
# message_stop, the end of the response): they come at once or not at all, so a provider that
# stalls or drops the connection now costs at most this long, never a whole idle period.
TRAILER_GRACE_SECONDS = 1.0


def create_http_client(settings: Settings) -> httpx2.AsyncClient:
    """The pooled client every provider call shares (the SDKs speak httpx2)."""
    # Our own deadlines (first token, idle) are the real limits; these only bound the socket.
    read = max(settings.first_event_timeout_seconds, settings.stream_idle_timeout_seconds) + 30
    return httpx2.AsyncClient(
        limits=httpx2.Limits(max_connections=2000, max_keepalive_connections=400),
        timeout=httpx2.Timeout(connect=10.0, read=read, write=30.0, pool=10.0),
    )


class DirectStreamer:
    """Streams an answer from the model a call names. Retries only before the first token."""

    def __init__(self, settings: Settings, transport: Transport | None = None) -> None:
        self.settings = settings
        # The SDK clients are built on this (they are used to configure requests, not send them);
        # it also carries the requests when a proxy is configured.
        self.http = create_http_client(settings)
        if transport is None:
            transport = Httpx2Transport(self.http) if proxies_configured() else H1Transport()
        self.transport = transport
        self._wires: dict[WireProtocol, Wire] = {}

    def wire(self, protocol: WireProtocol) -> Wire:
        wire = self._wires.get(protocol)
        if wire is None:
            module, name = _WIRES[protocol]
            wire = getattr(importlib.import_module(module), name)(self.http)
            self._wires[protocol] = wire
        return wire

    def warm_up(self) -> None:
        """Import every protocol now rather than on its first request."""
        for protocol in _WIRES:
            self.wire(protocol)

    @staticmethod
    def start_warm_up() -> threading.Thread:
        """Import the SDKs in a background thread: together they take seconds, which the first
        chat request would otherwise spend blocking the event loop."""

        def load() -> None:
            for module, _ in _WIRES.values():
                try:
                    importlib.import_module(module)
                except Exception:  # the request that needs it will report it
                    log.exception("llm_warm_up_failed", module=module)
            # Everything imported so far lives as long as the process: move it out of the
            # collector's reach, removing the full-GC pauses measured on the streaming path.
            gc.freeze()

        thread = threading.Thread(target=load, name="llm-warm-up", daemon=True)
        thread.start()
        return thread

    async def aclose(self) -> None:
        await self.transport.aclose()
        await self.http.aclose()

    async def stream(self, call: ModelCall, sink: AnswerSink) -> StreamResult:
        endpoint = resolve_endpoint(self.settings, call.provider_id, call.api_key, call.base_url)
        wire = self.wire(endpoint.protocol)
        mode = endpoint.mode
        retries = self.settings.provider_retries if call.retries is None else call.retries
        announced = False

        def announce() -> None:
            nonlocal announced
            if not announced:
                announced = True
                sink.started(endpoint.provider_id, call.model_id, False)

        while True:
            try:
                return await self._attempt(wire, call, endpoint, mode, sink, announce)
            except LLMError as exc:
                log.warning(
                    "llm_attempt_failed",
                    provider=endpoint.provider_id,
                    model=call.model_id,
                    base_url=endpoint.base_url,
                    error=exc.code,
                    status=exc.status,
                    upstream=(exc.upstream or "")[:500],
                    after_content=exc.after_content,
                )
                if exc.after_content:
                    # pydantic-ai does not fail over once tokens have streamed either; a later
                    # failover wrapper restarts on another model and sends `reset`.
                    raise
                if (
                    mode == "tool"
                    and endpoint.protocol == "openai"
                    and exc.status in (400, 404, 422)
                    and "tool" in (exc.upstream or "").lower()
                ):
                    # A compatible server without function calling: ask for JSON content.
                    mode = "json"
                    continue
                if exc.retryable and retries > 0:
                    retries -= 1
                    await asyncio.sleep(0.2 + random.random() * 0.3)
                    continue
                raise

    async def _attempt(
        self,
        wire: Wire,
        call: ModelCall,
        endpoint: Endpoint,
        mode: OutputMode,
        sink: AnswerSink,
        announce: Callable[[], None],
    ) -> StreamResult:
        parser = wire.parser(endpoint, mode, sink)
        try:
            await self._read(wire, parser, call, endpoint, mode, announce)
        except LLMError as exc:
            exc.after_content = parser.content_seen
            exc.usage = parser.usage()
            raise
        if not parser.complete:
            cut = LLMError(
                "provider_unavailable",
                f"{endpoint.provider_name} ended the stream before the answer was complete.",
                failure="stream_cut",
            )
            cut.after_content = parser.content_seen
            raise cut
        usage = parser.usage()
        if usage is None:
            usage = Usage(
                input_tokens=estimate_input_tokens(call),
                output_tokens=parser.chars // 4,
                reported=False,
            )
        return StreamResult(
            provider=endpoint.provider_id,
            model=call.model_id,
            usage=usage,
            stop_reason=parser.stop_reason,
            truncated=parser.stop_reason in _TRUNCATED,
            cost_usd=0.0 if endpoint.user_url else cost_usd(call.model_id, usage),
        )

    async def _read(
        self,
        wire: Wire,
        parser: Parser,
        call: ModelCall,
        endpoint: Endpoint,
        mode: OutputMode,
        announce: Callable[[], None],
    ) -> None:
        """The hot loop: bytes -> SSE payloads -> parser -> sink, under two deadlines."""
        settings = self.settings
        idle = settings.stream_idle_timeout_seconds
        grace = min(idle, TRAILER_GRACE_SECONDS)
        loop = asyncio.get_running_loop()
        feed = parser.feed
        decoder = SSEDecoder()
        began = time.monotonic()
        name = endpoint.provider_name
        request = wire.request(call, endpoint, mode)
        try:
            async with (
                asyncio.timeout(settings.first_event_timeout_seconds) as deadline,
                self.transport.stream(request.url, request.headers, request.body) as response,
            ):
                if response.status != 200:
                    raise http_error(name, response.status, await response.read())
                announce()
                refresh_at = 0.0

                def on_chunk(chunk: bytes) -> None:
                    # Runs inside the socket's read callback: keep it to decoding and appending.
                    nonlocal refresh_at
                    for payload in decoder.feed(chunk):
                        feed(payload)
                    if parser.complete:
                        if refresh_at != math.inf:
                            deadline.reschedule(loop.time() + grace)
                            refresh_at = math.inf
                    elif parser.content_seen:
                        # Re-arming the timer per chunk would cost more than the chunk:
                        # move the deadline at most four times per idle period.
                        now = loop.time()
                        if now >= refresh_at:
                            deadline.reschedule(now + idle)
                            refresh_at = now + idle / 4

                await response.pipe(on_chunk)
                for payload in decoder.flush():
                    feed(payload)
                parser.finish()
        except TimeoutError:
            if parser.complete:
                self._ended_uncleanly(parser, endpoint, call, "stalled")
                return
            if parser.content_seen:
                raise LLMError(
                    "provider_timeout",
                    f"{name} stopped sending for {idle:g} seconds in the middle of the answer.",
                    failure="stalled",
                ) from None
            waited = time.monotonic() - began
            raise LLMError(
                "provider_timeout",
                f"{name} did not start answering within {waited:.0f} seconds.",
                failure="no_first_token",
            ) from None
        except (HTTPError, OSError) as exc:
            if parser.complete:
                self._ended_uncleanly(parser, endpoint, call, repr(exc))
                return
            raise LLMError(
                "provider_unavailable",
                f"The connection to {name} broke off in the middle of the answer."
                if parser.content_seen
                else f"Could not reach {name} at {endpoint.base_url}.",
                upstream=repr(exc),
                retryable=not parser.content_seen,
                failure=_connection_failure(exc, parser.content_seen),
            ) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # A payload that is not JSON, or JSON not shaped like this protocol's events.
            raise LLMError(
                "provider_unavailable",
                f"{name} sent a stream this app cannot read.",
                upstream=repr(exc)[:500],
                failure="unreadable",
            ) from None

    @staticmethod
    def _ended_uncleanly(parser: Parser, endpoint: Endpoint, call: ModelCall, how: str) -> None:
        """The answer was complete when the stream stalled or broke: deliver it (usage
        estimated if its chunk never came)."""
        parser.finish()
        log.info(
            "llm_stream_ended_uncleanly",
            provider=endpoint.provider_id,
            model=call.model_id,
            how=how[:200],
            usage_reported=parser.usage() is not None,
        )


def _connection_failure(exc: BaseException, after_content: bool) -> Failure:
    """How a connection failed, for the failover chain's reason."""
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return "tls_error"
    return "connection_lost" if after_content else "connection_failed"
