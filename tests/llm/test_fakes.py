"""The fake providers themselves: the real SDKs must accept what they send."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI, AuthenticationError

from tests.fakes import (
    SAMPLE_FRAGMENT,
    ErrorReply,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    FragmentReply,
)

TOOL = {"type": "function", "function": {"name": "fragment", "parameters": {"type": "object"}}}


@pytest.mark.anyio
async def test_openai_tool_mode_with_usage() -> None:
    with FakeOpenAI() as fake:
        fake.script(FragmentReply(chunk_size=100))
        client = AsyncOpenAI(base_url=fake.base_url, api_key="k1", max_retries=0)
        stream = await client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            tools=[TOOL],  # type: ignore[list-item]
        )
        args, usage = "", None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.tool_calls:
                args += chunk.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[union-attr]
            usage = chunk.usage or usage
        await client.close()
    assert json.loads(args) == SAMPLE_FRAGMENT
    assert usage is not None
    assert usage.completion_tokens > 0
    assert fake.last_request.authorization == "Bearer k1"
    assert fake.last_request.json["model"] == "gpt-4.1"


@pytest.mark.anyio
async def test_openai_text_mode_and_error() -> None:
    with FakeOpenAI() as fake:
        fake.script(FragmentReply(chunk_size=50), ErrorReply(401, "bad key"))
        client = AsyncOpenAI(base_url=fake.base_url, api_key="k1", max_retries=0)
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert json.loads(text) == SAMPLE_FRAGMENT
        with pytest.raises(AuthenticationError, match="bad key"):
            await client.chat.completions.create(model="m", messages=[], stream=True)
        await client.close()


@pytest.mark.anyio
async def test_anthropic_tool_mode() -> None:
    with FakeAnthropic() as fake:
        fake.script(FragmentReply(chunk_size=300, cache_read_tokens=7))
        client = AsyncAnthropic(base_url=fake.base_url, api_key="k2", max_retries=0)
        async with client.messages.stream(
            model="claude-x",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": "fragment", "input_schema": {"type": "object"}}],
            tool_choice={"type": "tool", "name": "fragment"},
        ) as stream:
            message = await stream.get_final_message()
        await client.close()
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.input == SAMPLE_FRAGMENT
    assert message.usage.cache_read_input_tokens == 7
    assert message.usage.output_tokens > 0


def test_gemini_sse_and_stall_disconnect() -> None:
    with FakeGemini() as fake:
        fake.script(FragmentReply(chunk_size=1000), FragmentReply(stall_after=1))
        url = f"{fake.base_url}/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
        reply = httpx.post(url, json={"contents": []})
        events = [json.loads(e[6:]) for e in reply.text.split("\r\n\r\n") if e]
        text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
        assert json.loads(text) == SAMPLE_FRAGMENT
        assert events[-1]["candidates"][0]["finishReason"] == "STOP"
        with httpx.stream("POST", url, json={}) as stalled:
            next(stalled.iter_raw())
        assert fake.last_request.wait_disconnected(5)
        assert not fake.last_request.finished


def test_standalone_process() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai", "--port", "0", "--delay", "0"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        base = line.split()[1]
        started = time.monotonic()
        for _ in range(3):
            reply = httpx.post(f"{base}/chat/completions", json={"model": "m", "stream": True})
            assert reply.text.endswith("data: [DONE]\n\n")
        assert time.monotonic() - started < 5
        proc.terminate()
        assert proc.wait(10) in (0, -15)  # uvicorn re-raises SIGTERM after a clean stop


@pytest.mark.anyio
@pytest.mark.parametrize("flavor", ["openai", "groq", "openrouter"])
async def test_the_openai_sdk_raises_the_fakes_stream_errors(flavor: str) -> None:
    from openai import APIError

    from tests.fakes import StreamError

    error = StreamError(400, "too long", flavor=flavor, usage=True, after=2)  # type: ignore[arg-type]
    with FakeOpenAI() as fake:
        fake.script(FragmentReply(error=error))
        client = AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(APIError, match="too long"):
            async for _ in stream:
                pass
        await client.close()


@pytest.mark.anyio
async def test_the_anthropic_sdk_raises_the_fakes_error_event() -> None:
    from anthropic import APIStatusError

    from tests.fakes import StreamError

    with FakeAnthropic() as fake:
        fake.script(FragmentReply(error=StreamError(529, "Overloaded", after=3)))
        client = AsyncAnthropic(base_url=fake.base_url, api_key="k", max_retries=0)
        stream = await client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        with pytest.raises(APIStatusError, match="Overloaded"):
            async for _ in stream:
                pass
        await client.close()


@pytest.mark.parametrize(("then", "ending"), [("close", b""), ("reset", None)])
def test_a_complete_answer_then_a_dropped_connection_at_the_wire(
    then: str, ending: bytes | None
) -> None:
    """`close` ends the TCP stream (FIN) inside the chunked body, `reset` sends an RST; either way
    every byte sent before it arrives, `[DONE]` included."""
    import socket

    with FakeOpenAI() as fake:
        fake.script(FragmentReply(then=then))  # type: ignore[arg-type]
        with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:
            body = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
            head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
            s.sendall(head.encode() + b"\r\n\r\n" + body)
            got = b""
            last: bytes | None
            try:
                while chunk := s.recv(65536):
                    got += chunk
                last = b""
            except ConnectionResetError:
                last = None
    assert last == ending
    assert b"data: [DONE]\n\n" in got
    assert not got.endswith(b"0\r\n\r\n")  # the chunked body never ended
