"""Fake LLM provider servers speaking the real wire protocols, for tests and benches.

Each fake is a real HTTP server (uvicorn) on 127.0.0.1 with a free port, running in a background
thread with its own event loop: usable from sync tests, async tests (it never blocks their loop)
and from an app running in another process (give it `fake.base_url`).

    from tests.fakes import FakeOpenAI, FakeAnthropic, FakeGemini, FragmentReply, ErrorReply

    with FakeOpenAI() as fake:                    # FakeAnthropic() / FakeGemini() alike
        fake.base_url                             # http://127.0.0.1:PORT/v1 (OpenAI);
                                                  # http://127.0.0.1:PORT (Anthropic, Gemini)
        fake.script(FragmentReply(fragment_dict, chunk_size=24, delay=0.02))
        fake.script(ErrorReply(429, "slow down"), FragmentReply(stall_after=0))
        ...                                       # each request takes the next scripted reply,
                                                  # then `default` (FakeOpenAI(default=...)),
                                                  # else gets a 500
        fake.requests                             # [RecordedRequest(method, path, query,
                                                  #   headers (lower-case names), raw, json)]
        fake.last_request.authorization           # "Bearer <key>" as received
        fake.last_request.wait_disconnected(2.0)  # True once the client hung up mid-reply
        fake.reset()                              # drop the queue and the records

Replies (see `FragmentReply` / `ErrorReply` for every knob):
- `FragmentReply(fragment=SAMPLE_FRAGMENT, chunk_size=24, delay=0.0, first_delay=0.0,
  mode="auto"|"tool"|"text", stall_after=None, cut_after=None, usage=True, input_tokens=None,
  output_tokens=None, cache_read_tokens=0, cache_write_tokens=0, finish_reason=None,
  drop_after=None, drop="reset"|"close")`; `drop_after=N` breaks the connection after N
  content events (a provider process dying mid-answer).
  `fragment` may be a str sent verbatim (invalid output). "auto" mode answers with a tool call
  when the request offers tools.
  `error=StreamError(status, message, kind=None, flavor="openai"|"groq"|"openrouter",
  usage=False, after=0)`: an error inside the 200 stream, in the protocol's own shape;
  `tail_events=N` sends only the first N closing events, `then="end"|"stall"|"close"|"reset"`
  says how the response ends after them (e.g. a complete answer, then a stalled connection).
- `ErrorReply(status, message="...", body=None, headers={})`: the provider's own error shape.

Protocols (every fake serves all three; the class only picks `base_url`):
- OpenAI chat completions `POST /v1/chat/completions` SSE (`data: {chunk}` ... `data: [DONE]`),
  tool-call or content deltas, usage in a last chunk when `stream_options.include_usage`.
- Anthropic messages `POST /v1/messages` SSE (message_start, content_block_start tool_use/text,
  input_json_delta/text_delta, content_block_stop, message_delta with usage, message_stop).
- Gemini `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (text parts, usageMetadata).

`FakeMorph` (tests/fakes/morph.py) is Morph's apply API (OpenAI chat completions, not streamed):
it merges the `<update>` snippet into the `<code>` at its anchor lines, or answers as scripted
(`MorphReply(status=500)`, `MorphReply(content="...")`), and records requests.

`ServerThread(asgi_app)` runs any ASGI app the same way (e.g. the Fragments app for streaming
tests). `SAMPLE_FRAGMENT` / `SAMPLE_JSON` is the ~3.2 KB fragment sent by default (133 chunks
of 24 characters).

Standalone, for benches (answers the sample forever; prints `READY <base url>` when listening):

    python -m tests.fakes.openai --port 8011 --chunk-size 24 --delay 0.02
    python -m tests.fakes --protocol anthropic --port 0 --chunk-size 24 --delay 0.02
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.anthropic import FakeAnthropic
    from tests.fakes.base import (
        ErrorReply,
        FakeProvider,
        FragmentReply,
        RecordedRequest,
        Reply,
        StreamError,
    )
    from tests.fakes.gemini import FakeGemini
    from tests.fakes.morph import FakeMorph, MorphReply
    from tests.fakes.openai import FakeOpenAI
    from tests.fakes.sample import SAMPLE_FRAGMENT, SAMPLE_JSON
    from tests.fakes.server import ServerThread

# Imported lazily so `python -m tests.fakes.openai` does not import itself twice.
_WHERE = {
    "FakeAnthropic": "anthropic",
    "ErrorReply": "base",
    "FakeProvider": "base",
    "FragmentReply": "base",
    "RecordedRequest": "base",
    "Reply": "base",
    "StreamError": "base",
    "FakeGemini": "gemini",
    "FakeMorph": "morph",
    "MorphReply": "morph",
    "FakeOpenAI": "openai",
    "SAMPLE_FRAGMENT": "sample",
    "SAMPLE_JSON": "sample",
    "ServerThread": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"tests.fakes.{module}"), name)


__all__ = [
    "SAMPLE_FRAGMENT",
    "SAMPLE_JSON",
    "ErrorReply",
    "FakeAnthropic",
    "FakeGemini",
    "FakeMorph",
    "FakeOpenAI",
    "FakeProvider",
    "FragmentReply",
    "MorphReply",
    "RecordedRequest",
    "Reply",
    "ServerThread",
    "StreamError",
]
