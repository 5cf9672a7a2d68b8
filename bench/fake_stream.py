"""A deliberately cheap OpenAI-compatible streaming server for load benchmarks.

tests/fakes holds the faithful, scripted fakes; this one exists so the load generator's provider
costs as little CPU as possible on a 2-core machine (raw asyncio, pre-encoded chunks), leaving the
measured CPU to the service under test. It answers every POST .../chat/completions with the same
fragment, as tool-call deltas when the request offers tools and as content deltas otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json

FRAGMENT_CODE = (
    "\n".join(
        f"values_{i} = [x * {i} for x in range(10)]  # step {i} of the analysis" for i in range(42)
    )
    + "\nprint(sum(values_1))\n"
)

FRAGMENT = {
    "commentary": "I'll compute a few series with list comprehensions and print a summary.",
    "template": "code-interpreter-v1",
    "title": "Series",
    "description": "Computes some series and prints their sum.",
    "additional_dependencies": [],
    "has_additional_dependencies": False,
    "install_dependencies_command": "",
    "port": None,
    "file_path": "script.py",
    "code": FRAGMENT_CODE,
}


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _encode_events(payload: str, chunk_size: int, tool_mode: bool) -> list[bytes]:
    events: list[bytes] = []
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench",
    }
    if tool_mode:
        first = {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_bench",
                                "type": "function",
                                "function": {"name": "fragment", "arguments": ""},
                            }
                        ],
                    },
                    "finish_reason": None,
                }
            ],
        }
        events.append(first)  # type: ignore[arg-type]
    for piece in _chunks(payload, chunk_size):
        if tool_mode:
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        else:
            delta = {"content": piece}
        events.append(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,  # type: ignore[arg-type]
                        "finish_reason": None,
                    }
                ],
            }
        )
    events.append(
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {},  # type: ignore[arg-type]
                    "finish_reason": "tool_calls" if tool_mode else "stop",
                }
            ],
        }
    )
    events.append(
        {
            **base,
            "choices": [],
            "usage": {  # type: ignore[arg-type]
                "prompt_tokens": 900,
                "completion_tokens": len(payload) // 4,
                "total_tokens": 900 + len(payload) // 4,
            },
        }
    )
    out = []
    for ev in events:
        body = b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n"
        out.append(f"{len(body):x}\r\n".encode() + body + b"\r\n")
    done = b"data: [DONE]\n\n"
    out.append(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
    return out


class FakeServer:
    def __init__(self, chunk_size: int, delay: float) -> None:
        payload = json.dumps(FRAGMENT)
        self.tool_events = _encode_events(payload, chunk_size, tool_mode=True)
        self.text_events = _encode_events(payload, chunk_size, tool_mode=False)
        self.delay = delay

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                events = self.tool_events if b'"tools"' in body else self.text_events
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for event in events:
                    writer.write(event)
                    await writer.drain()
                    if self.delay:
                        await asyncio.sleep(self.delay)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(port: int, chunk_size: int, delay: float) -> None:
    fake = FakeServer(chunk_size, delay)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-size", type=int, default=24)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.chunk_size, args.delay))


if __name__ == "__main__":
    main()
