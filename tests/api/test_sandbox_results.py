"""/api/sandbox runs a stored fragment named by id for its owner only, and stores the result,
which GET /api/conversations/{id} returns as the latest (the sandbox itself is stubbed here)."""

from __future__ import annotations

import httpx
import pytest

from fragments.app import create_app
from fragments.config import Settings
from fragments.store.db import Database, Identity
from fragments.store.models import FragmentRow
from tests.accounts import sign_up
from tests.fakes.sandboxes import FakeSandboxes

pytestmark = pytest.mark.anyio


async def test_results_are_stored_with_the_fragment(db_settings: Settings) -> None:
    sandboxes = FakeSandboxes(sandbox_id="sbx1", stdout=["hi\n"])
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
            body = {"template": "code-interpreter-v1", "code": "print('hi')"}
            db = Database(db_settings.resolved_database_url)
            try:
                async with db.transaction(Identity(me["id"], me["team_id"])) as session:
                    row = FragmentRow(
                        conversation_id=conversation["id"],
                        version=1,
                        template="code-interpreter-v1",
                        body=body,
                    )
                    session.add(row)
                    await session.flush()
                    fragment_id = row.id
            finally:
                await db.aclose()

            refused = await api.post(
                "/api/sandbox", json={"fragment_id": fragment_id}, headers=mallory.headers
            )
            assert refused.status_code == 404
            assert sandboxes.runs == []
            ran = await api.post(
                "/api/sandbox", json={"fragment_id": fragment_id}, headers=alice.headers
            )
            assert ran.status_code == 200, ran.text
            assert ran.json()["stdout"] == ["hi\n"]
            # The stored fragment ran, in a sandbox keyed by its owner and conversation.
            assert [(f.code, owner) for f, owner in sandboxes.runs] == [
                ("print('hi')", f"{me['id']}:{conversation['id']}")
            ]
            detail = (
                await api.get(f"/api/conversations/{conversation['id']}", headers=alice.headers)
            ).json()
            latest = detail["latest_result"]
            assert latest["fragment_id"] == fragment_id
            assert latest["sandbox_id"] == "sbx1"
            assert latest["result"]["stdout"] == ["hi\n"]
