"""Optional confirmation of new addresses (FRAGMENTS_REQUIRE_EMAIL_CONFIRMATION), against a real
SMTP server: sign-up answers without tokens and mails a link, sign-in waits for it, the link
signs in once; off, sign-up is unchanged. SQLite and PostgreSQL, guests allowed and off."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from pydantic import ValidationError
from sqlalchemy import text

from fragments.config import Settings
from fragments.store.db import make_engine
from fragments.store.migrate import alembic_config, upgrade
from tests.accounts import bearer, sign_up
from tests.auth.recovery_app import PUBLIC_URL, age_links, guests, mail_settings, running
from tests.databases import OWNER_ROLE, PgDatabase, _admin
from tests.mailbox import Mailbox, mailbox

__all__ = ["guests", "mailbox"]  # fixtures

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"


async def _signup(api: httpx.AsyncClient, email: str, **extra: object) -> httpx.Response:
    return await api.post("/api/auth/signup", json={"email": email, "password": PASSWORD, **extra})


async def _login(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await api.post("/api/auth/login", json={"email": email, "password": password})


def _address(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}@example.com"


async def test_confirmation_flow(db_settings: Settings, mailbox: Mailbox, guests: bool) -> None:
    settings = mail_settings(
        db_settings, mailbox.url, allow_guests=guests, require_email_confirmation=True
    )
    async with running(settings) as api:
        options = (await api.get("/api/auth/options")).json()
        assert options["email_confirmation"] is True

        email = _address("new")
        created = await _signup(api, email.upper())
        assert created.status_code == 201, created.text
        # No tokens until the address is confirmed.
        assert created.json() == {"confirmation_required": True, "email": email}

        (mail,) = mailbox.to(email)
        assert "confirm" in mail.message["Subject"].lower()
        link, token = mail.link("confirm")
        assert link == f"{PUBLIC_URL}/#confirm={token}"

        # Sign-in waits for the link; a wrong password is still just a wrong password (the
        # account's state is told only to whoever knows the password).
        early = await _login(api, email)
        assert early.status_code == 403
        assert early.json()["error"] == "email_unconfirmed"
        wrong = await _login(api, email, "not the password")
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid_credentials"

        confirmed = await api.post("/api/auth/confirm-email", json={"token": token})
        assert confirmed.status_code == 200, confirmed.text
        pair = confirmed.json()
        me = await api.get("/api/auth/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200
        assert me.json()["email"] == email
        assert (await _login(api, email)).status_code == 200

        reuse = await api.post("/api/auth/confirm-email", json={"token": token})
        assert reuse.status_code == 400
        assert reuse.json()["error"] == "invalid_token"
        # Confirmed accounts get no further confirmation mail.
        await age_links(settings, email)
        assert (
            await api.post("/api/auth/confirm-email/resend", json={"email": email})
        ).status_code == 202
        assert len(mailbox.to(email)) == 1


async def test_resend_is_limited_and_answers_alike(db_settings: Settings, mailbox: Mailbox) -> None:
    settings = mail_settings(
        db_settings, mailbox.url, allow_guests=False, require_email_confirmation=True
    )
    async with running(settings) as api:
        email = _address("lost")
        assert (await _signup(api, email)).status_code == 201
        resend = "/api/auth/confirm-email/resend"
        # Right after sign-up, within the cooldown: the usual answer, no second mail.
        soon = await api.post(resend, json={"email": email})
        unknown = await api.post(resend, json={"email": _address("nobody")})
        assert soon.status_code == unknown.status_code == 202
        assert soon.json() == unknown.json()
        assert len(mailbox.to(email)) == 1
        assert len(mailbox.messages) == 1

        await age_links(settings, email)
        assert (await api.post(resend, json={"email": email})).status_code == 202
        first, second = mailbox.to(email)
        assert first.link("confirm")[1] != second.link("confirm")[1]
        assert (await _login(api, email)).status_code == 403
        confirm = "/api/auth/confirm-email"
        done = await api.post(confirm, json={"token": second.link("confirm")[1]})
        assert done.status_code == 200, done.text
        # Using one link voided the other.
        stale = await api.post(confirm, json={"token": first.link("confirm")[1]})
        assert stale.status_code == 400
        assert stale.json()["error"] == "invalid_token"


async def test_forged_confirmation_token(db_settings: Settings, mailbox: Mailbox) -> None:
    settings = mail_settings(
        db_settings, mailbox.url, allow_guests=False, require_email_confirmation=True
    )
    async with running(settings) as api:
        forged = await api.post(
            "/api/auth/confirm-email", json={"token": secrets.token_urlsafe(32)}
        )
        assert forged.status_code == 400
        assert forged.json()["error"] == "invalid_token"
        assert forged.json()["detail"].endswith("ask for a new one.")


async def test_a_password_reset_confirms_the_address(
    db_settings: Settings, mailbox: Mailbox
) -> None:
    settings = mail_settings(
        db_settings, mailbox.url, allow_guests=False, require_email_confirmation=True
    )
    async with running(settings) as api:
        email = _address("resetter")
        assert (await _signup(api, email)).status_code == 201
        await api.post("/api/auth/password-reset", json={"email": email})
        reset = [m for m in mailbox.to(email) if "#reset=" in m.text]
        assert len(reset) == 1
        done = await api.post(
            "/api/auth/password-reset/confirm",
            json={"token": reset[0].link("reset")[1], "password": "another good password"},
        )
        assert done.status_code == 200, done.text
        # Following a mailed link proved the address.
        assert (await _login(api, email, "another good password")).status_code == 200


async def test_a_guest_signing_up_keeps_its_work_after_confirming(
    db_settings: Settings, mailbox: Mailbox
) -> None:
    settings = mail_settings(
        db_settings, mailbox.url, allow_guests=True, require_email_confirmation=True
    )
    async with running(settings) as api:
        guest = (await api.post("/api/auth/guest")).json()
        guest_id = (await api.get("/api/auth/me", headers=bearer(guest["access_token"]))).json()[
            "id"
        ]
        email = _address("claimer")
        created = await _signup(api, email, guest_token=guest["access_token"])
        assert created.json()["confirmation_required"] is True
        # The guest token no longer acts for what is now an account.
        gone = await api.get("/api/auth/me", headers=bearer(guest["access_token"]))
        assert gone.status_code == 401
        token = mailbox.to(email)[0].link("confirm")[1]
        pair = (await api.post("/api/auth/confirm-email", json={"token": token})).json()
        me = (await api.get("/api/auth/me", headers=bearer(pair["access_token"]))).json()
        assert me["id"] == guest_id
        assert me["guest"] is False


async def test_off_by_default_sign_up_is_unchanged(
    db_settings: Settings, mailbox: Mailbox, guests: bool
) -> None:
    settings = mail_settings(db_settings, mailbox.url, allow_guests=guests)
    async with running(settings) as api:
        assert (await api.get("/api/auth/options")).json()["email_confirmation"] is False
        account = await sign_up(api, "plain")
        assert (await _login(api, account.email, account.password)).status_code == 200
        assert mailbox.messages == []
        resend = await api.post("/api/auth/confirm-email/resend", json={"email": account.email})
        assert resend.status_code == 404
        assert resend.json()["error"] == "email_confirmation_disabled"


def test_confirmation_needs_smtp(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="needs FRAGMENTS_SMTP_URL"):
        mail_settings(settings, None, require_email_confirmation=True)


@contextmanager
def _fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """An empty database of the backend (owned by the migration role on PostgreSQL)."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{folder / 'old.db'}"
        return
    name = "fragments_test_" + secrets.token_hex(6)
    asyncio.run(_admin([f"CREATE DATABASE {name} OWNER {OWNER_ROLE}"]))
    try:
        yield PgDatabase(name).owner_url
    finally:
        asyncio.run(_admin([f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]))


def test_accounts_from_before_the_migration_count_as_confirmed(
    backend: str, tmp_path: Path
) -> None:
    async def check(url: str) -> None:
        await upgrade(url, revision="0004")
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO users (id, email, password_hash, is_guest, created_at) "
                        "VALUES ('u1', 'old@example.com', 'x', false, :at), "
                        "('g1', NULL, NULL, true, :at)"
                    ),
                    {"at": datetime(2026, 1, 1, tzinfo=UTC)},
                )
            await upgrade(url)
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT id, email_confirmed_at IS NOT NULL FROM users ORDER BY id")
                )
                assert [tuple(r) for r in rows] == [("g1", False), ("u1", True)]
        finally:
            await engine.dispose()
        # And back down: the migration is reversible.
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0004")

    with _fresh_database(backend, tmp_path) as url:
        asyncio.run(check(url))
