"""The scripted fake provider: replies, request records, and the ASGI app that serves them.

Protocol encoders (openai.py, anthropic.py, gemini.py) turn a reply into the exact bytes the real
provider would send; this module queues replies, records requests and streams the bytes.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeAlias

from tests.fakes.sample import SAMPLE_FRAGMENT
from tests.fakes.server import ServerThread

Mode = Literal["auto", "tool", "text"]
Ending = Literal["end", "stall", "close", "reset"]
# How an OpenAI-compatible provider shapes an error inside its stream.
Flavor = Literal["openai", "groq", "openrouter"]


@dataclass
class StreamError:
    """An error a provider reports inside a stream it already answered 200 to.

    - `status`: the status the error stands for, where the shape carries one (Gemini `code`,
      Groq `status_code`, OpenRouter `code`); `kind` its type/code string (defaults from
      `status`: e.g. 400 `invalid_request_error`, 529 `overloaded_error`).
    - `flavor` (OpenAI protocol only): "openai" `{"error": {message, type, param, code}}`;
      "groq" adds `status_code` and a string `code`; "openrouter" is a whole chunk with
      `error: {code: <status>, message, metadata}` and `choices` ending with
      `finish_reason: "error"`.
    - `usage`: the same chunk also carries the usage so far (OpenAI protocol; Gemini
      `usageMetadata`).
    - `after`: content events sent before it (0: before the first token).
    """

    status: int = 500
    message: str = "fake provider stream error"
    kind: str | None = None
    flavor: Flavor = "openai"
    usage: bool = False
    after: int = 0


@dataclass
class FragmentReply:
    """A streamed answer carrying `fragment` (a dict, sent as JSON; or a str, sent verbatim —
    use that for invalid output).

    - `chunk_size` characters of the answer per provider event, `delay` seconds between events,
      `first_delay` seconds before the first content event (after the response headers).
    - `mode`: "auto" answers with a tool call when the request offered tools, else as text
      (OpenAI `delta.content`, Anthropic `text_delta`); "tool" / "text" force one. Gemini always
      answers as text.
    - `stall_after=N`: after N content events, send nothing more and keep the connection open
      (N=0: stall before the first token). The stall ends when the client goes away.
    - `cut_after=N`: end the response cleanly after N content events, without the closing
      events (no finish reason, no usage, no `[DONE]` / `message_stop`).
    - `drop_after=N`: after N content events, drop the connection mid-body: `drop="reset"` a
      TCP RST (a provider's process dying), `drop="close"` a FIN without the chunked body's end.
    - `usage=False`: report no token usage. Token counts default to characters / 4.
    - `finish_reason`: the stop reason to report instead of the normal one (e.g. "length",
      "max_tokens", "MAX_TOKENS" for an answer cut by the token limit).
    - `error`: a `StreamError` sent inside the 200 stream after `error.after` content events,
      in the protocol's own shape; the response then ends (as the providers do).
    - `tail_events=N`: send only the first N closing events (OpenAI: the finish_reason chunk,
      the usage chunk, `[DONE]`; Anthropic: content_block_stop, message_delta, message_stop;
      Gemini: the chunk with finishReason) — None sends them all.
    - `then`: what follows the closing events: "end" the response cleanly; "stall" (keep the
      connection open and silent until the client leaves); "close" the connection without
      ending the chunked body (a FIN); "reset" it (a TCP RST).
    """

    fragment: Mapping[str, Any] | str = field(default_factory=lambda: dict(SAMPLE_FRAGMENT))
    chunk_size: int = 24
    delay: float = 0.0
    first_delay: float = 0.0
    mode: Mode = "auto"
    stall_after: int | None = None
    cut_after: int | None = None
    drop_after: int | None = None
    drop: Literal["close", "reset"] = "reset"
    usage: bool = True
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    finish_reason: str | None = None
    error: StreamError | None = None
    tail_events: int | None = None
    then: Ending = "end"
    _chunks: dict[Any, list[bytes]] = field(default_factory=dict, init=False, repr=False)

    @property
    def text(self) -> str:
        if isinstance(self.fragment, str):
            return self.fragment
        return json.dumps(self.fragment)

    def pieces(self) -> list[str]:
        text = self.text
        size = max(1, self.chunk_size)
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]

    def encoded(self, key: Any, build: Callable[[list[str]], list[bytes]]) -> list[bytes]:
        """The content events for this reply, encoded once (a default reply serves forever)."""
        cached = self._chunks.get(key)
        if cached is None:
            cached = build(self.pieces())
            self._chunks[key] = cached
        return cached


@dataclass
class ErrorReply:
    """An HTTP error: `status`, with the provider's usual error body carrying `message`
    (or `body` verbatim when given: a dict is sent as JSON, a str as is)."""

    status: int
    message: str = "fake provider error"
    body: Mapping[str, Any] | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


Reply: TypeAlias = FragmentReply | ErrorReply


@dataclass
class RecordedRequest:
    """One request the fake received. Header names are lower-case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    json: Any
    received_at: float = field(default_factory=time.monotonic)
    _disconnected: threading.Event = field(default_factory=threading.Event, repr=False)
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def disconnected(self) -> bool:
        """The client closed the connection before the reply was complete."""
        return self._disconnected.is_set()

    @property
    def finished(self) -> bool:
        """The reply was sent completely."""
        return self._finished.is_set()

    def wait_disconnected(self, timeout: float = 5.0) -> bool:
        return self._disconnected.wait(timeout)

    def wait_finished(self, timeout: float = 5.0) -> bool:
        return self._finished.wait(timeout)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class Exchange:
    """What an encoder needs to answer one request."""

    request: RecordedRequest
    model: str


class Encoder(abc.ABC):
    """Turns a reply into a provider's wire format; each provider's fake implements the
    abstract parts (which requests it answers, and the bytes of its stream and errors)."""

    # SSE event separator of this provider.
    sep = b"\n\n"

    @abc.abstractmethod
    def matches(self, method: str, path: str) -> bool:
        """Implemented by each provider's encoder."""

    def model(self, request: RecordedRequest) -> str:
        body = request.json if isinstance(request.json, dict) else {}
        return str(body.get("model") or "fake-model")

    @abc.abstractmethod
    def head(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        """Implemented by each provider's encoder."""

    @abc.abstractmethod
    def content(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        """Implemented by each provider's encoder."""

    @abc.abstractmethod
    def tail(self, reply: FragmentReply, ex: Exchange, tool: bool) -> list[bytes]:
        """Implemented by each provider's encoder."""

    def wants_tool(self, reply: FragmentReply, request: RecordedRequest) -> bool:
        if reply.mode != "auto":
            return reply.mode == "tool"
        body = request.json if isinstance(request.json, dict) else {}
        return bool(body.get("tools"))

    @abc.abstractmethod
    def error_body(self, reply: ErrorReply) -> bytes:
        """Implemented by each provider's encoder."""

    def lists_models(self, request: RecordedRequest) -> bool:
        """Whether this is the provider's model listing (the health check's probe)."""
        return False

    def models_body(self) -> bytes:
        """The model listing in the provider's shape."""
        return b'{"data": []}'

    @abc.abstractmethod
    def stream_error(self, reply: FragmentReply, error: StreamError, ex: Exchange) -> bytes:
        """The SSE event that reports `error` inside this provider's stream."""

    @staticmethod
    def usage_counts(reply: FragmentReply, ex: Exchange) -> tuple[int, int]:
        inp = reply.input_tokens
        if inp is None:
            inp = max(1, len(ex.request.raw) // 4)
        out = reply.output_tokens
        if out is None:
            out = max(1, len(reply.text) // 4)
        return inp, out


class FakeProvider:
    """A fake provider server; see the package docstring for usage.

    Every protocol is served on every instance (paths differ); the subclasses only say which
    `base_url` their SDK wants.
    """

    def __init__(
        self,
        *,
        default: Reply | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        encoders: Sequence[Encoder] | None = None,
        record: bool = True,
    ) -> None:
        if encoders is None:
            from tests.fakes.anthropic import AnthropicEncoder
            from tests.fakes.gemini import GeminiEncoder
            from tests.fakes.openai import OpenAIEncoder

            encoders = (OpenAIEncoder(), AnthropicEncoder(), GeminiEncoder())
        self.default = default
        self._record = record
        self._encoders = tuple(encoders)
        self._lock = threading.Lock()
        self._queue: collections.deque[Reply] = collections.deque()
        self._requests: list[RecordedRequest] = []
        # Model listings (`GET .../models`, the app's health probes) are kept apart from
        # `requests`, so a health check never shifts a test's count of chat requests.
        self._listings: list[RecordedRequest] = []
        # The listing's answer: None lists the models (200); an ErrorReply fails it.
        self.models_reply: ErrorReply | None = None
        self._stop: asyncio.Event | None = None
        self._server = ServerThread(self._app, host=host, port=port, on_stop=self._release)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _release(self) -> None:
        if self._stop is not None:
            self._stop.set()

    # ---- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, no path."""
        return self._server.url

    @property
    def base_url(self) -> str:
        """What the provider's SDK takes as its base URL."""
        return self.url

    @property
    def port(self) -> int:
        return self._server.port

    # ---- scripting and records ---------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one, then `default` (else a 500)."""
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        """Forget queued replies and recorded requests."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._listings.clear()

    @property
    def listings(self) -> list[RecordedRequest]:
        """The model listings received (health probes), apart from `requests`."""
        with self._lock:
            return list(self._listings)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise AssertionError("the fake received no request")
            return self._requests[-1]

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while True:
            reqs = self.requests
            if len(reqs) >= count or time.monotonic() > deadline:
                return reqs
            time.sleep(0.005)

    def _next_reply(self) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.default is not None:
            return self.default
        return ErrorReply(500, "fake provider: no scripted reply left")

    # ---- the ASGI app ------------------------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self._stop is None:
            self._stop = asyncio.Event()
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            raw=raw,
            json=parsed,
        )
        lister = next((e for e in self._encoders if e.lists_models(record)), None)
        if lister is not None:
            with self._lock:
                self._listings.append(record)
            failure = self.models_reply
            if failure is None:
                await _plain(send, 200, lister.models_body())
            else:
                await _plain(send, failure.status, lister.error_body(failure))
            record._finished.set()
            return
        if self._record:
            with self._lock:
                self._requests.append(record)
        encoder = next((e for e in self._encoders if e.matches(record.method, record.path)), None)
        if encoder is None:
            await _plain(send, 404, b'{"error": "fake provider: unknown path"}')
            record._finished.set()
            return
        reply = self._next_reply()
        if isinstance(reply, ErrorReply):
            headers = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
            await _plain(send, reply.status, encoder.error_body(reply), headers)
            record._finished.set()
            return
        await self._stream(encoder, reply, record, receive, send, scope.get("client"))

    async def _stream(
        self,
        encoder: Encoder,
        reply: FragmentReply,
        record: RecordedRequest,
        receive: Any,
        send: Any,
        client: Sequence[Any] | None,
    ) -> None:
        ex = Exchange(request=record, model=encoder.model(record))
        tool = encoder.wants_tool(reply, record)
        content = encoder.content(reply, ex, tool)
        stop = self._stop
        assert stop is not None

        async def produce() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )
            for event in encoder.head(reply, ex, tool):
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if reply.first_delay:
                await asyncio.sleep(reply.first_delay)
            error = reply.error
            for i, event in enumerate(content):
                if error is not None and i == error.after:
                    await finish(encoder.stream_error(reply, error, ex))
                    return
                if i == reply.stall_after:
                    await stop.wait()
                    return
                if i == reply.cut_after:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                if i == reply.drop_after:
                    assert client is not None
                    await self._server.drop_connection(tuple(client), reset=reply.drop == "reset")
                    await stop.wait()
                    return
                if i and reply.delay:
                    await asyncio.sleep(reply.delay)
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if reply.stall_after is not None and reply.stall_after >= len(content):
                await stop.wait()
                return
            if error is not None:
                await finish(encoder.stream_error(reply, error, ex))
                return
            tail = encoder.tail(reply, ex, tool)
            if reply.tail_events is not None:
                tail = tail[: reply.tail_events]
            if reply.then == "end":
                await finish(b"".join(tail))
                return
            await send({"type": "http.response.body", "body": b"".join(tail), "more_body": True})
            if reply.then != "stall":
                assert client is not None
                await self._server.drop_connection(tuple(client), reset=reply.then == "reset")
            await stop.wait()

        async def finish(body: bytes) -> None:
            await send({"type": "http.response.body", "body": body, "more_body": False})
            record._finished.set()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        producer = asyncio.ensure_future(produce())
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not record.finished and (watcher.done() or not producer.done()):
                record._disconnected.set()
            for task in (producer, watcher):
                task.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            # Writing to a closed connection: the client went away mid-stream.
            record._disconnected.set()


async def _plain(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def sse(data: Any, *, event: str | None = None, sep: bytes = b"\n\n") -> bytes:
    """One SSE event with a JSON payload."""
    payload = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    if event is None:
        return b"data: " + payload + sep
    return b"event: " + event.encode() + b"\ndata: " + payload + sep
