"""CPU per answer of the streaming hot path, in this process (not collected by pytest).

    .venv/bin/python -m tests.llm.measure_hot_path [--protocol openai] [--answers 300]
        [--concurrency 100]

Runs `DirectStreamer` + `chat_events` (provider bytes in, SSE event bytes out: everything the
chat endpoint does per chunk and per tick, without the HTTP server in front) against a fake
provider in another process sending the ~3.2 KB sample fragment in 24-character chunks every
20 ms, and divides this process's CPU time by the number of answers. The whole service's figure
(uvicorn, FastAPI, sse-starlette on top) is what `make bench` prints.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import subprocess
import sys
import time

import structlog

from fragments.chat.prompt import system_prompt
from fragments.chat.stream import chat_events
from fragments.config import Settings
from fragments.llm.streamer import DirectStreamer
from fragments.llm.types import ModelCall, ProviderId, Turn
from fragments.sandbox.templates import resolve_templates

MODELS: dict[str, tuple[ProviderId, str]] = {
    "openai": ("openai", "gpt-4.1"),
    "anthropic": ("anthropic", "claude-sonnet-5-5"),
    "gemini": ("google", "gemini-2.5-flash"),
}


async def measure(base_url: str, protocol: str, answers: int, concurrency: int) -> None:
    provider, model = MODELS[protocol]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        openai_base_url=base_url,
        openai_api_key="k",
        anthropic_base_url=base_url,
        anthropic_api_key="k",
        google_base_url=base_url,
        google_api_key="k",
    )
    call = ModelCall(
        provider,
        model,
        system_prompt(resolve_templates("auto")),
        (Turn("user", ("Make a loan calculator",)),),
    )
    streamer = DirectStreamer(settings)
    streamer.warm_up()
    events = 0
    sent = 0

    async def one() -> None:
        nonlocal events, sent
        async for chunk in chat_events(
            streamer, call, pinned=None, conversation_id="c", interval=0.05
        ):
            events += chunk.count(b"\r\n\r\n")
            sent += len(chunk)

    await asyncio.gather(*(one() for _ in range(5)))  # connections, caches
    gc.collect()
    gc.freeze()
    events = sent = 0
    gate = asyncio.Semaphore(concurrency)

    async def gated() -> None:
        async with gate:
            await one()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(gated() for _ in range(answers)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await streamer.aclose()
    print(
        f"{protocol}: {answers} answers, {concurrency} at a time, {wall:.1f} s: "
        f"CPU {cpu / answers * 1000:.1f} ms/answer, {events / answers:.0f} events and "
        f"{sent / answers / 1000:.0f} KB out per answer"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.llm.measure_hot_path")
    parser.add_argument("--protocol", choices=sorted(MODELS), default="openai")
    parser.add_argument("--answers", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    command = [sys.executable, "-m", "tests.fakes", "--protocol", args.protocol, "--port", "0"]
    fake = subprocess.Popen(
        [*command, "--chunk-size", "24", "--delay", "0.02"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        base_url = fake.stdout.readline().split()[1]
        asyncio.run(measure(base_url, args.protocol, args.answers, args.concurrency))
    finally:
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
