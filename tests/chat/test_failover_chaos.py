"""Chaos: 50 answers stream through the app from a primary provider running as its own process;
the process is killed mid-traffic. Every answer still ends with a valid fragment (from the
fallback), and those cut mid-answer told the client to `reset` before the fallback spoke."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fragments.app import create_app
from fragments.config import Settings
from tests.chat.conftest import Event, chat_body, names, stream_live
from tests.fakes import SAMPLE_FRAGMENT, FakeAnthropic, FragmentReply, ServerThread

pytestmark = pytest.mark.anyio

STREAMS = 50


@pytest.fixture
def primary_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m tests.fakes`: the sample answer in 24-character chunks 30 ms apart (~4 s)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "--port", "0", "--delay", "0.03"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY "), line
        yield proc, line.removeprefix("READY ")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def secondary() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(default=FragmentReply(chunk_size=200), record=False) as fake:
        yield fake  # type: ignore[misc]


async def read_stream(client: httpx.AsyncClient, url: str, body: object) -> list[Event]:
    events: list[Event] = []
    async with client.stream("POST", f"{url}/api/chat", json=body) as response:
        assert response.status_code == 200
        name, data = "message", []
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                events.append(Event(name, json.loads("\n".join(data))))
                name, data = "message", []
    return events


async def test_killing_the_primary_loses_no_answer(
    primary_process: tuple[subprocess.Popen[str], str],
    secondary: FakeAnthropic,
    data_dir: Path,
) -> None:
    proc, primary_url = primary_process
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        openai_api_key="platform-openai",
        openai_base_url=primary_url,
        anthropic_api_key="platform-anthropic",
        anthropic_base_url=secondary.base_url,
        google_api_key=None,
        failover_chain="openai:gpt-4.1,anthropic:claude-sonnet-5-5",
        first_event_timeout_seconds=5.0,
        stream_idle_timeout_seconds=5.0,
        rate_limits=False,
        response_cache=False,
    )
    with ServerThread(create_app(settings), lifespan="on") as app:
        # One answer first: the protocols' SDKs are imported and every pool is warm.
        assert names(await stream_live(app.url, chat_body("Warm up")))[-1] == "done"
        # One client for every stream (making 50 clients would block this loop for seconds).
        limits = httpx.Limits(max_connections=STREAMS + 10)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            streams = [
                asyncio.create_task(read_stream(client, app.url, chat_body(f"App number {n}")))
                for n in range(STREAMS)
            ]
            # Let the answers get going, then kill the provider's process outright.
            await asyncio.sleep(1.5)
            os.kill(proc.pid, signal.SIGKILL)
            results: list[list[Event]] = await asyncio.gather(*streams)

    cut = 0
    for events in results:
        order = names(events)
        assert order[-3:] == ["fragment", "usage", "done"], order
        fragment = events[order.index("fragment")].data
        assert fragment["code"] == SAMPLE_FRAGMENT["code"]
        providers = [e.data for e in events if e.name == "provider"]
        assert providers[-1]["provider"] in ("openai", "anthropic")
        if providers[-1]["provider"] == "anthropic":
            assert providers[-1]["fallback"] is True
            first_fallback = order.index("provider", 1) if len(providers) > 1 else 0
            if "partial" in order[:first_fallback]:
                # Partials of the primary were shown: the client was told to drop them.
                cut += 1
                assert order[first_fallback - 1] == "reset", order
    # The kill happened mid-traffic: answers were cut in the middle.
    assert cut > 0
