"""Helpers for tests that act as several accounts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx


@dataclass
class Account:
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def sign_up(client: httpx.AsyncClient, name: str = "user", **extra: object) -> Account:
    email = f"{name}-{secrets.token_hex(4)}@example.com"
    password = "correct horse battery"
    response = await client.post(
        "/api/auth/signup", json={"email": email, "password": password, **extra}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    return Account(email, password, body["access_token"], body["refresh_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
