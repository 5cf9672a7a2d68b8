"""Provider keys a user saves: encrypted at rest, never returned in plaintext, private."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from fragments.auth.secrets import decrypt
from fragments.config import Settings
from fragments.store.db import Database, Identity
from fragments.store.models import ProviderKey
from tests.accounts import sign_up
from tests.modes import anonymous

pytestmark = pytest.mark.anyio

SECRET = "sk-live-abcdefghijklmnopqrstuvwxyz1234"


async def test_saved_keys_are_encrypted_and_never_returned(
    api: httpx.AsyncClient, db_settings: Settings
) -> None:
    alice = await sign_up(api, "alice")
    saved = await api.put("/api/keys/openai", json={"api_key": SECRET}, headers=alice.headers)
    assert saved.status_code == 200, saved.text
    assert SECRET not in saved.text
    assert saved.json()["hint"] == "…1234"
    listing = await api.get("/api/keys", headers=alice.headers)
    assert SECRET not in listing.text
    assert [k["provider"] for k in listing.json()] == ["openai"]

    me = (await api.get("/api/auth/me", headers=alice.headers)).json()
    db = Database(db_settings.resolved_database_url)
    try:
        async with db.transaction(Identity(me["id"], me["team_id"])) as session:
            row = (await session.execute(select(ProviderKey))).scalar_one()
        assert SECRET not in row.ciphertext
        assert decrypt(db_settings, row.ciphertext) == SECRET
        wrong = db_settings.model_copy(update={"secret_key": SecretStr("another secret key")})
        assert decrypt(wrong, row.ciphertext) is None
    finally:
        await db.aclose()

    mallory = await sign_up(api, "mallory")
    assert (await api.get("/api/keys", headers=mallory.headers)).json() == []
    assert (await api.delete("/api/keys/openai", headers=mallory.headers)).status_code == 404
    assert (await api.delete("/api/keys/openai", headers=alice.headers)).status_code == 204
    assert (await api.get("/api/keys", headers=alice.headers)).json() == []
    bad = await api.put("/api/keys/skynet", json={"api_key": "x"}, headers=alice.headers)
    assert bad.status_code == 400
    assert (await api.get("/api/keys", headers=anonymous())).status_code == 401
