"""Retention: conversations older than the limit are purged with their turns; newer ones and
other users' fresh ones stay (on PostgreSQL, through row-level security)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from fragments.config import Settings
from fragments.store.db import Database, Identity
from fragments.store.models import Conversation, FragmentRow, User
from fragments.store.retention import purge_expired
from tests.accounts import bearer, sign_up

pytestmark = pytest.mark.anyio


async def test_old_conversations_are_purged(api: httpx.AsyncClient, db_settings: Settings) -> None:
    alice = await sign_up(api, "alice")
    bob = await sign_up(api, "bob")
    ids = []
    for account, title in ((alice, "old"), (alice, "new"), (bob, "old too")):
        made = await api.post("/api/conversations", json={"title": title}, headers=account.headers)
        ids.append(made.json()["id"])
    old = [ids[0], ids[2]]
    db = Database(db_settings.resolved_database_url)
    # Row-level security hides rows from an identity-less session on PostgreSQL: age them
    # through the migration role (the table owner) with each owner's identity.
    owner_db = Database(db_settings.resolved_migration_url)
    try:
        for account, conversation_id in ((alice, ids[0]), (bob, ids[2])):
            me = (await api.get("/api/auth/me", headers=account.headers)).json()
            async with owner_db.transaction(Identity(me["id"], me["team_id"])) as session:
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == conversation_id)
                    .values(updated_at=datetime.now(UTC) - timedelta(days=100))
                )
                session.add(
                    FragmentRow(
                        conversation_id=conversation_id, version=1, template="t", files=[], body={}
                    )
                )
        purged = await purge_expired(db, 90)
        assert purged >= 2
    finally:
        await db.aclose()
        await owner_db.aclose()
    for account in (alice, bob):
        listing = (await api.get("/api/conversations", headers=account.headers)).json()
        assert not {c["id"] for c in listing["items"]} & set(old)
    listing = (await api.get("/api/conversations", headers=alice.headers)).json()
    assert [c["title"] for c in listing["items"]] == ["new"]
    owner_db = Database(db_settings.resolved_migration_url)
    try:
        async with owner_db.transaction() as session:
            # No orphaned fragments (SQLite needs foreign keys on to cascade).
            left = await session.execute(
                select(func.count())
                .select_from(FragmentRow)
                .where(FragmentRow.conversation_id.in_(old))
            )
            assert left.scalar_one() == 0
    finally:
        await owner_db.aclose()


@pytest.mark.auth_modes("guests")  # about guests, who do not exist with guests off
async def test_old_empty_guests_are_purged(api: httpx.AsyncClient, db_settings: Settings) -> None:
    old_guest = (await api.post("/api/auth/guest")).json()
    busy_guest = (await api.post("/api/auth/guest")).json()
    new_guest = (await api.post("/api/auth/guest")).json()
    made = await api.post(
        "/api/conversations", json={"title": "kept"}, headers=bearer(busy_guest["access_token"])
    )
    assert made.status_code == 201
    ids = {}
    for name, tokens in (("old", old_guest), ("busy", busy_guest), ("new", new_guest)):
        me = await api.get("/api/auth/me", headers=bearer(tokens["access_token"]))
        ids[name] = me.json()["id"]
    db = Database(db_settings.resolved_database_url)
    try:
        async with db.transaction() as session:
            await session.execute(
                update(User)
                .where(User.id.in_([ids["old"], ids["busy"]]))
                .values(created_at=datetime.now(UTC) - timedelta(days=100))
            )
        await purge_expired(db, 90)
        async with db.transaction() as session:
            left = set(
                (await session.execute(select(User.id).where(User.id.in_(ids.values())))).scalars()
            )
    finally:
        await db.aclose()
    assert left == {ids["busy"], ids["new"]}
    gone = await api.get("/api/auth/me", headers=bearer(old_guest["access_token"]))
    assert gone.status_code == 401
