"""PostgreSQL row-level security, checked with direct SQL as the app's role (no BYPASSRLS): with
another tenant's identity set, their rows are invisible and unwritable, whatever the query."""

from __future__ import annotations

import asyncpg
import pytest

from fragments.store.db import Database, Identity
from fragments.store.models import (
    Conversation,
    ExecutionResultRow,
    FragmentRow,
    Membership,
    MessageRow,
    Team,
    User,
)
from tests.databases import APP_ROLE, PG_HOST, PgDatabase

pytestmark = pytest.mark.anyio


@pytest.fixture
def pg(pg_database: PgDatabase | None) -> PgDatabase:
    if pg_database is None:
        pytest.skip(
            "PostgreSQL at 127.0.0.1:5432 is unreachable (it runs on the dev and CI machines)"
        )
    return pg_database


async def _tenant(db: Database, name: str) -> tuple[Identity, str, str]:
    """A user with a team, a conversation, a fragment, a message and a result; (identity,
    conversation id, fragment id)."""
    async with db.transaction() as session:
        user = User(email=f"{name}-{id(session)}@example.com")
        team = Team(name=name, limits={})
        session.add_all([user, team])
        await session.flush()
        session.add(Membership(user_id=user.id, team_id=team.id, role="owner", is_default=True))
    who = Identity(user.id, team.id)
    async with db.transaction(who) as session:
        conversation = Conversation(user_id=user.id, team_id=team.id, title=f"{name}'s app")
        session.add(conversation)
        await session.flush()
        fragment = FragmentRow(
            conversation_id=conversation.id, version=1, template="t", files=[], body={}
        )
        session.add(fragment)
        await session.flush()
        session.add(MessageRow(conversation_id=conversation.id, seq=1, role="user", content=[]))
        session.add(ExecutionResultRow(fragment_id=fragment.id, result={}, sandbox_id="s"))
    return who, conversation.id, fragment.id


async def test_the_app_role_cannot_bypass_rls(pg: PgDatabase) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=pg.port, user=APP_ROLE, database=pg.name)
    try:
        row = await conn.fetchrow(
            "SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        assert row is not None
        assert (row["rolbypassrls"], row["rolsuper"]) == (False, False)
        forced = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relforcerowsecurity AND relrowsecurity"
        )
        assert {r["relname"] for r in forced} >= {
            "conversations",
            "messages",
            "fragments",
            "execution_results",
            "provider_keys",
            "usage_records",
        }
    finally:
        await conn.close()


async def test_another_teams_rows_are_invisible_to_direct_sql(pg: PgDatabase) -> None:
    db = Database(pg.app_url)
    try:
        alice, alice_conv, alice_frag = await _tenant(db, "alice")
        mallory, _, _ = await _tenant(db, "mallory")
    finally:
        await db.aclose()

    conn = await asyncpg.connect(host=PG_HOST, port=pg.port, user=APP_ROLE, database=pg.name)
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('app.user_id', $1, true), set_config('app.team_id', $2, true)",
                mallory.user_id,
                mallory.team_id,
            )
            # A "faulty" query with no tenant filter at all.
            filters = {
                "conversations": ("id = $1", alice_conv),
                "messages": ("conversation_id = $1", alice_conv),
                "fragments": ("conversation_id = $1", alice_conv),
                "execution_results": ("fragment_id = $1", alice_frag),
            }
            for table, (where, value) in filters.items():
                assert await conn.fetch(f"SELECT * FROM {table}"), table  # her own rows ...
                found = await conn.fetch(f"SELECT * FROM {table} WHERE {where}", value)
                assert found == [], table  # ... and none of alice's
            updated = await conn.execute(
                "UPDATE conversations SET title = 'pwned' WHERE id = $1", alice_conv
            )
            assert updated == "UPDATE 0"
            deleted = await conn.execute("DELETE FROM conversations WHERE id = $1", alice_conv)
            assert deleted == "DELETE 0"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO messages (id, conversation_id, seq, role, content, created_at)"
                        " VALUES ('x', $1, 9, 'user', '[]', now())",
                        alice_conv,
                    )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO conversations (id, user_id, team_id, title, shared, "
                        "created_at, updated_at) VALUES ('y', $1, $2, '', false, now(), now())",
                        alice.user_id,
                        alice.team_id,
                    )
        # No identity at all: nothing.
        assert await conn.fetch("SELECT * FROM conversations") == []
        # Shared with alice's team: visible to that team, still not to mallory's.
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.user_id', $1, true)", alice.user_id)
            await conn.execute("UPDATE conversations SET shared = true WHERE id = $1", alice_conv)
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('app.user_id', 'someone', true), "
                "set_config('app.team_id', $1, true)",
                alice.team_id,
            )
            assert len(await conn.fetch("SELECT id FROM conversations")) == 1
            assert len(await conn.fetch("SELECT id FROM fragments")) == 1
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('app.user_id', $1, true), set_config('app.team_id', $2, true)",
                mallory.user_id,
                mallory.team_id,
            )
            ids = {r["id"] for r in await conn.fetch("SELECT id FROM conversations")}
            assert alice_conv not in ids
        # The identity is per transaction: it does not survive on the pooled connection.
        assert await conn.fetch("SELECT * FROM conversations") == []
    finally:
        await conn.close()
