"""Password reset by a mailed single-use link, against a real SMTP server (aiosmtpd): the link
works once and expires, every old session ends, unknown addresses get the same answer and no
mail, and without SMTP the feature is off. SQLite and PostgreSQL, guests allowed and off."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from fragments.config import Settings
from fragments.mail_url import SmtpSecurity
from tests.accounts import Account, bearer, sign_up
from tests.auth.recovery_app import PUBLIC_URL, age_links, guests, mail_settings, running
from tests.mailbox import Login, Mailbox, mailbox, serving_mailbox

__all__ = ["guests", "mailbox"]  # fixtures

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "a brand new passphrase"


async def _ask(api: httpx.AsyncClient, email: str) -> httpx.Response:
    return await api.post("/api/auth/password-reset", json={"email": email})


async def _login(api: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await api.post("/api/auth/login", json={"email": email, "password": password})


async def _reset_token(api: httpx.AsyncClient, mailbox: Mailbox, account: Account) -> str:
    asked = await _ask(api, account.email)
    assert asked.status_code == 202, asked.text
    (mail,) = mailbox.to(account.email)
    link, token = mail.link("reset")
    assert link.startswith(f"{PUBLIC_URL}/#reset=")
    return token


async def test_reset_happy_path_ends_every_old_session(
    db_settings: Settings, mailbox: Mailbox, guests: bool
) -> None:
    settings = mail_settings(db_settings, mailbox.url, allow_guests=guests)
    async with running(settings) as api:
        options = (await api.get("/api/auth/options")).json()
        assert options["password_reset"] is True
        assert options["guests"] is guests

        account = await sign_up(api, "forgetful")
        second = (await _login(api, account.email, account.password)).json()

        asked = await _ask(api, account.email.upper())
        assert asked.status_code == 202, asked.text
        (mail,) = mailbox.to(account.email)
        assert mail.message["From"] == "Fragments <no-reply@fragments.example>"
        assert mail.message["To"] == account.email
        assert "reset" in mail.message["Subject"].lower()
        link, token = mail.link("reset")
        assert link == f"{PUBLIC_URL}/#reset={token}"

        done = await api.post(
            "/api/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
        )
        assert done.status_code == 200, done.text
        pair = done.json()
        assert pair["token_type"] == "bearer"
        me = await api.get("/api/auth/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200
        assert me.json()["email"] == account.email

        # The old password is gone, the new one works.
        old = await _login(api, account.email, account.password)
        assert old.status_code == 401
        assert (await _login(api, account.email, NEW_PASSWORD)).status_code == 200

        # Every session from before the reset is over: access and refresh tokens alike.
        for access in (account.access_token, second["access_token"]):
            assert (await api.get("/api/auth/me", headers=bearer(access))).status_code == 401
        for refresh in (account.refresh_token, second["refresh_token"]):
            again = await api.post("/api/auth/refresh", json={"refresh_token": refresh})
            assert again.status_code == 401

        # The link worked once.
        reuse = await api.post(
            "/api/auth/password-reset/confirm", json={"token": token, "password": "yet another one"}
        )
        assert reuse.status_code == 400
        assert reuse.json()["error"] == "invalid_token"
        assert "used" in reuse.json()["detail"]
        assert (await _login(api, account.email, NEW_PASSWORD)).status_code == 200


async def test_unknown_address_gets_the_same_answer_and_no_mail(
    db_settings: Settings, mailbox: Mailbox, guests: bool
) -> None:
    settings = mail_settings(db_settings, mailbox.url, allow_guests=guests)
    async with running(settings) as api:
        account = await sign_up(api, "known")
        known = await _ask(api, account.email)
        unknown = await _ask(api, f"nobody-{secrets.token_hex(4)}@example.com")
        malformed = await _ask(api, "not an address")
        assert known.status_code == unknown.status_code == malformed.status_code == 202
        assert known.json() == unknown.json() == malformed.json()
        assert set(known.json()) == {"status", "detail"}
        # Only the real account got a mail.
        assert [m.recipients for m in mailbox.messages] == [[account.email]]


async def test_sending_is_limited_per_address(db_settings: Settings, mailbox: Mailbox) -> None:
    settings = mail_settings(db_settings, mailbox.url, allow_guests=False)
    async with running(settings) as api:
        account = await sign_up(api, "impatient")
        first = await _ask(api, account.email)
        second = await _ask(api, account.email)
        # The same answer, but one mail: a second link within the cooldown is not sent.
        assert first.json() == second.json()
        assert len(mailbox.to(account.email)) == 1
        # Once the cooldown has passed, a new link goes out; both links are live until one
        # is used, and using one voids the other.
        await age_links(settings, account.email)
        assert (await _ask(api, account.email)).status_code == 202
        mails = mailbox.to(account.email)
        assert len(mails) == 2
        older, newer = (m.link("reset")[1] for m in mails)
        done = await api.post(
            "/api/auth/password-reset/confirm", json={"token": newer, "password": NEW_PASSWORD}
        )
        assert done.status_code == 200, done.text
        stale = await api.post(
            "/api/auth/password-reset/confirm", json={"token": older, "password": "other pass 1"}
        )
        assert stale.status_code == 400
        assert stale.json()["error"] == "invalid_token"


async def test_expired_forged_and_weak(db_settings: Settings, mailbox: Mailbox) -> None:
    settings = mail_settings(db_settings, mailbox.url, allow_guests=False)
    async with running(settings) as api:
        account = await sign_up(api, "late")
        token = await _reset_token(api, mailbox, account)

        # Too short a password is refused without spending the link.
        weak = await api.post(
            "/api/auth/password-reset/confirm", json={"token": token, "password": "short"}
        )
        assert weak.status_code == 400
        assert weak.json()["error"] == "weak_password"

        forged = await api.post(
            "/api/auth/password-reset/confirm",
            json={"token": secrets.token_urlsafe(32), "password": NEW_PASSWORD},
        )
        assert forged.status_code == 400
        assert forged.json() == {
            "error": "invalid_token",
            "detail": "This link is invalid, already used or expired; ask for a new one.",
        }

        await age_links(settings, account.email, expire=True)
        expired = await api.post(
            "/api/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
        )
        assert expired.status_code == 400
        assert expired.json()["error"] == "invalid_token"
        # Nothing changed: the old password still works.
        assert (await _login(api, account.email, account.password)).status_code == 200


async def test_reset_is_off_without_smtp(db_settings: Settings, guests: bool) -> None:
    settings = mail_settings(db_settings, None, allow_guests=guests)
    async with running(settings) as api:
        options = (await api.get("/api/auth/options")).json()
        assert options["password_reset"] is False
        asked = await _ask(api, "someone@example.com")
        confirm = await api.post(
            "/api/auth/password-reset/confirm",
            json={"token": secrets.token_urlsafe(32), "password": NEW_PASSWORD},
        )
        for answer in (asked, confirm):
            assert answer.status_code == 404
            assert answer.json() == {
                "error": "password_reset_disabled",
                "detail": "Password reset is not set up on this server; ask its operator.",
            }


async def test_a_mail_server_that_is_down_changes_nothing_for_the_caller(
    db_settings: Settings,
) -> None:
    from tests.mailbox import _free_port

    settings = mail_settings(db_settings, f"smtp://127.0.0.1:{_free_port()}", allow_guests=False)
    async with running(settings) as api:
        account = await sign_up(api, "unlucky")
        asked = await _ask(api, account.email)
        # The same answer as ever (it must not tell that the address has an account); the
        # failure is logged for the operator.
        assert asked.status_code == 202


def test_smtp_url_schemes_are_checked(settings: Settings) -> None:
    for good in (
        "smtp://127.0.0.1:2525",
        "smtp+starttls://user:p%40ss@mail.example.com",
        "smtps://mail.example.com",
    ):
        assert mail_settings(settings, good).smtp_url is not None
    with pytest.raises(ValidationError, match="FRAGMENTS_SMTP_URL must start with"):
        mail_settings(settings, "http://mail.example.com")
    # An empty variable means no mail.
    assert mail_settings(settings, "").smtp_url is None
    with pytest.raises(ValidationError, match="FRAGMENTS_PUBLIC_URL must start with"):
        mail_settings(settings, None, public_url="fragments.example")
    # Links never end up with a double slash.
    slash = mail_settings(settings, None, public_url="https://fragments.example/app/")
    assert slash.resolved_public_url == "https://fragments.example/app"
    assert Settings(_env_file=None, port=8123).resolved_public_url == "http://127.0.0.1:8123"  # type: ignore[call-arg]


def test_mail_url_parts() -> None:
    from fragments.mail_url import parse_smtp_url

    target = parse_smtp_url("smtp+starttls://user%40corp:p%40ss@mail.example.com")
    assert (target.host, target.port, target.security) == ("mail.example.com", 587, "starttls")
    assert (target.username, target.password) == ("user@corp", "p@ss")
    assert parse_smtp_url("smtps://mail.example.com").port == 465
    assert parse_smtp_url("smtp://localhost").port == 25


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_mail_goes_over_tls_with_a_login(
    security: SmtpSecurity,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fragments.auth.mail import Mail, MailUnavailable, mailer

    login = Login("mailer@example.com", "p@ss word:/")
    letter = Mail(to="someone@example.com", subject="Hello", text="Over TLS.\n")
    with serving_mailbox(security, login=login, cert_dir=tmp_path) as box:
        sender = mailer(mail_settings(settings, box.url))
        assert sender is not None
        assert sender.target.security == security
        # The server's certificate is checked: unknown, it is refused.
        with pytest.raises(MailUnavailable):
            await sender.send(letter)
        # Trusted (as an operator's CA bundle would make it), the mail goes through.
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "smtp-cert.pem"))
        await sender.send(letter)
        (got,) = box.to("someone@example.com")
        assert got.text.strip() == "Over TLS."
        # A wrong password is a mail outage to the caller, not a crash.
        wrong = mail_settings(settings, box.url.replace("p%40ss", "nope"))
        wrong_sender = mailer(wrong)
        assert wrong_sender is not None
        with pytest.raises(MailUnavailable):
            await wrong_sender.send(letter)
        assert len(box.messages) == 1
