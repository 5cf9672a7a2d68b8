"""Accounting: every answer's tokens (with cache reads and writes) and cost are stored per user
and team and reported by GET /api/usage by day and model; a cut-off answer is estimated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from fragments.config import Settings
from fragments.llm.pricing import cost_usd
from fragments.llm.types import Usage
from tests.accounts import sign_up
from tests.chat.conftest import app_client, chat_body, names, parse_sse
from tests.conftest import Backend, database_settings
from tests.databases import PgDatabase
from tests.fakes import FakeAnthropic, FakeOpenAI, FragmentReply
from tests.modes import anonymous

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(
    chat_settings: Settings, backend: Backend, pg_database: PgDatabase | None
) -> AsyncIterator[httpx.AsyncClient]:
    """On SQLite and PostgreSQL (row-level security on)."""
    settings = chat_settings.model_copy(update=database_settings(backend, pg_database))
    async with app_client(settings) as c:
        yield c


async def test_usage_by_day_and_model_with_cache_tokens(
    client: httpx.AsyncClient, fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    alice = await sign_up(client, "alice")
    reply = FragmentReply(
        input_tokens=3000, output_tokens=800, cache_read_tokens=2000, cache_write_tokens=500
    )
    fake_anthropic.script(reply, reply)
    fake_openai.script(FragmentReply(input_tokens=1000, output_tokens=100))
    for n in range(2):
        body = chat_body(f"Make counter {n}", model="claude-sonnet-5-5", provider="anthropic")
        response = await client.post("/api/chat", json=body, headers=alice.headers)
        events = parse_sse(response.text)
        assert names(events)[-1] == "done"
        usage = events[-2].data
        assert usage["cache_read_tokens"] == 2000
        assert usage["cache_write_tokens"] == 500
    await client.post("/api/chat", json=chat_body(), headers=alice.headers)

    report = (await client.get("/api/usage", headers=alice.headers)).json()
    today = datetime.now(UTC).date().isoformat()
    by_model = {item["model"]: item for item in report["items"]}
    assert {item["day"] for item in report["items"]} == {today}
    sonnet = by_model["anthropic/claude-sonnet-5-5"]
    assert sonnet["requests"] == 2
    assert sonnet["input_tokens"] == 6000
    assert sonnet["cache_read_tokens"] == 4000
    assert sonnet["cache_write_tokens"] == 1000
    one = cost_usd("claude-sonnet-5-5", Usage(3000, 800, 2000, 500))
    # 500 fresh x $3 + 800 out x $15 + 2000 read x $0.30 + 500 write x $3.75, per million
    assert one == pytest.approx((500 * 3 + 800 * 15 + 2000 * 0.3 + 500 * 3.75) / 1e6)
    assert sonnet["cost_usd"] == pytest.approx(2 * one)
    assert by_model["openai/gpt-4.1"]["requests"] == 1
    assert report["total"]["requests"] == 3
    assert report["month"]["requests"] == 3
    assert report["month"]["cost_usd"] == pytest.approx(report["total"]["cost_usd"])

    # Another user of another team sees none of it; the team scope is the caller's team.
    bob = await sign_up(client, "bob")
    assert (await client.get("/api/usage", headers=bob.headers)).json()["items"] == []
    team = (await client.get("/api/usage?scope=team", headers=alice.headers)).json()
    assert team["total"]["requests"] == 3
    assert (await client.get("/api/usage", headers=anonymous())).status_code == 401


async def test_a_cut_stream_is_estimated_and_recorded(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    alice = await sign_up(client, "alice")
    fake_openai.script(FragmentReply(cut_after=10, chunk_size=40))
    response = await client.post("/api/chat", json=chat_body(), headers=alice.headers)
    events = parse_sse(response.text)
    assert names(events)[-1] == "error"
    report = (await client.get("/api/usage", headers=alice.headers)).json()
    (item,) = report["items"]
    assert item["requests"] == 1
    assert item["output_tokens"] == 400 // 4  # ten chunks of 40 characters, characters / 4
    assert item["input_tokens"] > 0
    assert item["cost_usd"] > 0
