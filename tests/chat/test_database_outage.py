"""The database goes away mid-conversation (a proxy of the test's own is cut, never the shared
server): chat still answers with `saved: false`, tokens are checked by signature alone, and the
client's re-sent turn is stored, once, when the database is back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from fragments.config import Settings
from tests.accounts import sign_up
from tests.chat.conftest import app_client, chat_body, names, parse_sse
from tests.databases import APP_ROLE, PG_HOST, PG_PORT, PgDatabase
from tests.fakes import FakeOpenAI, FragmentReply
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.anyio


@pytest.fixture
def proxy(pg_database: PgDatabase | None) -> Iterator[TcpProxy]:
    if pg_database is None:
        pytest.skip(
            "PostgreSQL at 127.0.0.1:5432 is unreachable (it runs on the dev and CI machines)"
        )
    p = TcpProxy(PG_HOST, PG_PORT)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
async def client(
    chat_settings: Settings, pg_database: PgDatabase | None, proxy: TcpProxy
) -> AsyncIterator[httpx.AsyncClient]:
    assert pg_database is not None
    settings = chat_settings.model_copy(
        update={
            "database_url": pg_database.url(APP_ROLE, port=proxy.port),
            "database_migration_url": pg_database.owner_url,
            "database_app_role": APP_ROLE,
        }
    )
    async with app_client(settings) as c:
        yield c


async def test_chat_survives_a_database_outage(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, proxy: TcpProxy
) -> None:
    fake_openai.script(FragmentReply(), FragmentReply())
    alice = await sign_up(client, "alice")
    first = await client.post("/api/chat", json=chat_body("Make a counter"), headers=alice.headers)
    done = parse_sse(first.text)[-1].data
    assert done["saved"] is True
    conversation_id = done["conversation_id"]

    proxy.cut()
    body = chat_body("Now make it blue", conversation_id=conversation_id, turn_id="turn-2")
    second = await client.post("/api/chat", json=body, headers=alice.headers)
    assert second.status_code == 200, second.text
    events = parse_sse(second.text)
    assert names(events)[-1] == "done", names(events)
    lost = events[-1].data
    assert lost["saved"] is False
    assert lost["conversation_id"] == conversation_id
    fragment = next(e.data for e in events if e.name == "fragment")
    # Reads need the database: a clear 503, not a hang or a trace.
    listing = await client.get("/api/conversations", headers=alice.headers)
    assert listing.status_code == 503
    assert listing.json()["error"] == "database_unavailable"

    proxy.restore()
    turn = {
        "turn_id": "turn-2",
        "message": body["messages"][-1],
        "fragment": fragment,
        "fragment_id": lost["fragment_id"],
    }
    for _ in range(2):
        resent = await client.post(
            f"/api/conversations/{conversation_id}/turns", json=turn, headers=alice.headers
        )
        assert resent.status_code == 200, resent.text
        assert resent.json()["fragment_id"] == lost["fragment_id"]
    detail = (
        await client.get(f"/api/conversations/{conversation_id}", headers=alice.headers)
    ).json()
    assert [f["version"] for f in detail["fragments"]] == [1, 2]
    assert detail["messages"][2]["content"][0]["text"] == "Now make it blue"
