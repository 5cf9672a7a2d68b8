"""A minimal raw-socket client for POST /api/chat, cheap enough to drive hundreds of streams
from the same 2-core machine as the service it measures."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass


@dataclass
class StreamTiming:
    first_partial: float | None  # seconds from request to the first `partial` event
    total: float  # seconds from request to the end of the stream
    ok: bool  # saw `done`
    error: str | None = None


def chat_body(model_id: str = "bench-model") -> bytes:
    return json.dumps(
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Compute series"}]}],
            "template": "code-interpreter-v1",
            "model": {"id": model_id, "providerId": "openai"},
        }
    ).encode()


async def stream_chat(host: str, port: int, body: bytes, limit: float = 120.0) -> StreamTiming:
    """Send one chat request and time its first `partial` and its end, without parsing JSON."""
    start = time.perf_counter()
    first: float | None = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                b"POST /api/chat HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                b"Connection: close\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
            tail = b""
            saw_done = False
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                window = tail + data
                if first is None and b"event: partial" in window:
                    first = time.perf_counter() - start
                if b"event: done" in window:
                    saw_done = True
                if b"event: error" in window:
                    writer.close()
                    return StreamTiming(first, time.perf_counter() - start, False, "error event")
                tail = window[-32:]
            writer.close()
            return StreamTiming(first, time.perf_counter() - start, saw_done)
    except (TimeoutError, OSError) as exc:
        return StreamTiming(first, time.perf_counter() - start, False, type(exc).__name__)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
