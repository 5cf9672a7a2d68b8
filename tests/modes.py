"""The two ways the app runs, for tests parametrised over them: development defaults (guests
welcome) and production settings (guests off, strict checks). A test that must hold in only one
of them says so with `@pytest.mark.auth_modes("guests")` (or `"production"`)."""

from __future__ import annotations

import secrets
from typing import Literal

import httpx
from pydantic import SecretStr

from fragments.config import Settings
from tests.accounts import sign_up

AuthMode = Literal["guests", "production"]
AUTH_MODES: tuple[AuthMode, ...] = ("guests", "production")

# A private secret per run: production refuses the public development default.
_PRODUCTION_SECRET = SecretStr(secrets.token_urlsafe(32))


def mode_settings(mode: AuthMode) -> dict[str, object]:
    """Settings fields for the mode (on top of a test's own)."""
    if mode == "guests":
        return {"env": "development", "allow_guests": None}
    return {"env": "production", "allow_guests": None, "secret_key": _PRODUCTION_SECRET}


async def sign_in_for_mode(client: httpx.AsyncClient, mode: AuthMode) -> None:
    """In production nobody is served without a token: the client signs up and sends its
    bearer token by default (a request may still pass its own Authorization header)."""
    if mode == "production":
        account = await sign_up(client, "prod")
        client.headers.update(account.headers)


def anonymous() -> dict[str, str]:
    """Headers that drop a client's default token for one request (an empty header is no token)."""
    return {"Authorization": ""}


async def a_conversation(client: httpx.AsyncClient, anonymous_id: str) -> str:
    """A conversation id the caller may use: an anonymous guest names its own (nothing is
    stored), a signed-in caller's must exist and be theirs."""
    if not client.headers.get("authorization"):
        return anonymous_id
    response = await client.post("/api/conversations", json={"title": anonymous_id})
    assert response.status_code == 201, response.text
    conversation_id: str = response.json()["id"]
    return conversation_id


def saves_turns(client: httpx.AsyncClient) -> bool:
    """Whether this client's answers are stored (a signed-in caller's are, anonymous ones not)."""
    return bool(client.headers.get("authorization"))


def mode_of(settings: Settings) -> AuthMode:
    """The mode a test's settings put the app in."""
    return "guests" if settings.guests_allowed else "production"
