"""No key, token, password or cookie value reaches a log line: a whole session of sign-up,
login, refresh, chats with the platform's key and the caller's own (one answered by a provider
that quotes the key back in its error), a saved key, cookies, bearer headers and a password
reset, with every line the app printed captured and searched."""

from __future__ import annotations

import secrets

import pytest

from fragments.config import Settings
from tests.apps import app_client
from tests.auth.recovery_app import mail_settings
from tests.chat.conftest import PLATFORM_KEYS, chat_body, parse_sse
from tests.fakes import ErrorReply, FakeOpenAI
from tests.fakes import FragmentReply as Reply
from tests.mailbox import Mailbox, mailbox
from tests.observability.conftest import LogLines

__all__ = ["mailbox"]  # fixtures

pytestmark = pytest.mark.anyio


async def test_a_session_logs_no_secret(
    chat_settings: Settings, fake_openai: FakeOpenAI, mailbox: Mailbox, logs: LogLines
) -> None:
    own_key = "sk-own-" + secrets.token_hex(12)
    saved_key = "sk-saved-" + secrets.token_hex(12)
    cookie = "cookie-" + secrets.token_hex(12)
    password = "pw-" + secrets.token_hex(8)
    new_password = "pw-new-" + secrets.token_hex(8)
    metrics_token = "metrics-" + secrets.token_hex(12)
    settings = mail_settings(chat_settings, mailbox.url, metrics_token=metrics_token)
    seen: list[str] = [own_key, saved_key, cookie, password, new_password, metrics_token]
    seen += PLATFORM_KEYS.values()
    seen.append(settings.secret_key.get_secret_value())

    async with app_client(settings) as api:
        api.cookies.set("session", cookie)
        email = f"secretive-{secrets.token_hex(4)}@example.com"
        signup = await api.post("/api/auth/signup", json={"email": email, "password": password})
        assert signup.status_code == 201, signup.text
        login = await api.post("/api/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200
        tokens = login.json()
        seen += [tokens["access_token"], tokens["refresh_token"]]
        refreshed = await api.post(
            "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        access = refreshed.json()["access_token"]
        seen += [access, refreshed.json()["refresh_token"]]
        api.headers["Authorization"] = f"Bearer {access}"

        # The platform's key, the caller's own key, and a provider quoting the key it got.
        fake_openai.script(Reply())
        assert (await api.post("/api/chat", json=chat_body())).status_code == 200
        fake_openai.script(Reply())
        mine = chat_body(config={"api_key": own_key})
        assert (await api.post("/api/chat", json=mine)).status_code == 200
        fake_openai.script(ErrorReply(401, f"Incorrect API key provided: {own_key}."))
        failed = await api.post("/api/chat", json=mine)
        assert any(e.name == "error" for e in parse_sse(failed.text))
        fake_openai.script(ErrorReply(401, f"Bad key {PLATFORM_KEYS['openai']}"))
        quoted = await api.post("/api/chat", json=chat_body("another question"))
        assert parse_sse(quoted.text)[-1].name == "error"

        # A saved key, then a chat that uses it.
        saved = await api.put("/api/keys/anthropic", json={"api_key": saved_key})
        assert saved.status_code in (200, 204), saved.text

        # A bearer token on a request that fails, and in a query string.
        await api.get("/api/auth/me", headers={"Authorization": f"Bearer {access}x"})
        await api.get(f"/api/auth/me?token={access}")
        await api.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})

        # Password reset: the mailed token, the new password.
        asked = await api.post("/api/auth/password-reset", json={"email": email})
        assert asked.status_code == 202
        (mail,) = mailbox.to(email)
        _link, reset_token = mail.link("reset")
        seen.append(reset_token)
        done = await api.post(
            "/api/auth/password-reset/confirm",
            json={"token": reset_token, "password": new_password},
        )
        assert done.status_code == 200, done.text
        seen += [done.json()["access_token"], done.json()["refresh_token"]]

    lines = logs.read()
    assert len([line for line in lines if line.get("event") == "http_request"]) >= 12
    assert len([line for line in lines if line.get("event") == "chat_failed"]) == 2
    for secret in seen:
        assert secret not in logs.raw, f"a secret ({secret[:6]}...) was logged"
