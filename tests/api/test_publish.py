"""POST /api/publish and /s/<id>: only the sandbox's owner publishes; links redirect, then
expire with a clear page."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import update

from fragments.app import create_app
from fragments.config import Settings
from fragments.store.db import Database, Identity
from fragments.store.models import ExecutionResultRow, FragmentRow, ShortLink
from tests.accounts import sign_up
from tests.fakes.sandboxes import FakeSandboxes

pytestmark = pytest.mark.anyio

PREVIEW = "http://8501-sbxweb.localhost:8000/"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("links", ["database", "redis", "redis-down"])
async def test_publish_and_follow(db_settings: Settings, links: str) -> None:
    redis_url = {
        "database": None,
        "redis": "redis://127.0.0.1:6379/0",
        "redis-down": f"redis://127.0.0.1:{_closed_port()}/0",
    }[links]
    if links == "redis":
        try:
            with socket.create_connection(("127.0.0.1", 6379), timeout=1):
                pass
        except OSError:
            pytest.skip(
                "Redis at 127.0.0.1:6379 is unreachable (it runs on the dev and CI machines)"
            )
    db_settings = db_settings.model_copy(update={"redis_url": redis_url})
    sandboxes = FakeSandboxes(gone={"sbxgone"})
    extended = sandboxes.extended
    app = create_app(db_settings, sandboxes=sandboxes)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            alice = await sign_up(api, "alice")
            mallory = await sign_up(api, "mallory")
            conversation = (
                await api.post("/api/conversations", json={}, headers=alice.headers)
            ).json()
            me = (await api.get("/api/auth/me", headers=alice.headers)).json()
            db = Database(db_settings.resolved_database_url)
            try:
                async with db.transaction(Identity(me["id"], me["team_id"])) as session:
                    fragment = FragmentRow(
                        conversation_id=conversation["id"], version=1, template="t", body={}
                    )
                    session.add(fragment)
                    await session.flush()
                    for sandbox_id, result in (
                        ("sbxweb", {"sandbox_id": "sbxweb", "url": PREVIEW}),
                        ("sbxgone", {"sandbox_id": "sbxgone", "url": PREVIEW}),
                        ("sbxpy", {"sandbox_id": "sbxpy", "stdout": []}),
                    ):
                        session.add(
                            ExecutionResultRow(
                                fragment_id=fragment.id, sandbox_id=sandbox_id, result=result
                            )
                        )
            finally:
                await db.aclose()

            body = {"sandbox_id": "sbxweb", "duration": "1h"}
            assert (await api.post("/api/publish", json=body)).status_code == 401
            refused = await api.post("/api/publish", json=body, headers=mallory.headers)
            assert refused.status_code == 404
            assert extended == []
            too_long = await api.post(
                "/api/publish", json={**body, "duration": "2d"}, headers=alice.headers
            )
            assert too_long.status_code == 422
            python = await api.post(
                "/api/publish", json={**body, "sandbox_id": "sbxpy"}, headers=alice.headers
            )
            assert python.status_code == 400
            gone = await api.post(
                "/api/publish", json={**body, "sandbox_id": "sbxgone"}, headers=alice.headers
            )
            assert gone.status_code == 404

            made = await api.post("/api/publish", json=body, headers=alice.headers)
            assert made.status_code == 201, made.text
            link = made.json()
            assert link["url"] == f"http://test/s/{link['id']}"
            assert extended[-1] == ("sbxweb", 3600)
            follow = await api.get(f"/s/{link['id']}")
            assert follow.status_code == 307
            assert follow.headers["location"] == PREVIEW
            assert (await api.get("/s/nothing-here")).status_code == 404

            if links == "redis":
                redis = Redis.from_url("redis://127.0.0.1:6379/0")
                try:
                    assert await redis.ttl(f"fragments:link:{link['id']}") > 3500
                    await redis.delete(f"fragments:link:{link['id']}")  # as if it expired
                finally:
                    await redis.aclose()
            else:
                owner = Database(db_settings.resolved_database_url)
                try:
                    async with owner.transaction() as session:
                        changed = await session.execute(
                            update(ShortLink)
                            .where(ShortLink.id == link["id"])
                            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
                        )
                        assert changed.rowcount == 1  # type: ignore[attr-defined]
                finally:
                    await owner.aclose()
            expired = await api.get(f"/s/{link['id']}")
            assert expired.status_code == 410
            assert "expired" in expired.text
