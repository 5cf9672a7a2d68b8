"""With SUPABASE_JWT_SECRET set, Supabase-issued tokens are accepted and mapped to local users."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
from pydantic import SecretStr

from fragments.app import create_app
from fragments.config import Settings
from tests.accounts import bearer

pytestmark = pytest.mark.anyio

SUPABASE_SECRET = "super-secret-jwt-token-with-at-least-32-characters"


def supabase_token(sub: str, *, key: str = SUPABASE_SECRET, **claims: object) -> str:
    now = int(time.time())
    payload = {
        "sub": sub,
        "aud": "authenticated",
        "role": "authenticated",
        "email": "supa@example.com",
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="HS256")


async def test_supabase_tokens_map_to_local_users(db_settings: Settings) -> None:
    settings = db_settings.model_copy(update={"supabase_jwt_secret": SecretStr(SUPABASE_SECRET)})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            sub = str(uuid.uuid4())
            token = supabase_token(sub, email=f"{sub[:8]}@example.com")
            first = await api.get("/api/auth/me", headers=bearer(token))
            assert first.status_code == 200, first.text
            again = await api.get("/api/auth/me", headers=bearer(token))
            assert again.json()["id"] == first.json()["id"]
            assert first.json()["email"] == f"{sub[:8]}@example.com"
            made = await api.post("/api/conversations", json={"title": "x"}, headers=bearer(token))
            assert made.status_code == 201
            for forged in (
                supabase_token(sub, key="not the supabase secret, but long enough!!"),
                supabase_token(sub, exp=int(time.time()) - 60),
                supabase_token(sub, aud="anon"),
            ):
                assert (await api.get("/api/auth/me", headers=bearer(forged))).status_code == 401
