"""Single sign-on against a real OpenID Connect provider (npm oidc-provider) run by the test:
first and second sign-in, team auto-join by verified domain, refused e-mail takeover, forged and
mismatched callbacks, replayed codes, cancellation, provider down, SSO off. Both databases, with
guests allowed and with guests off."""

from __future__ import annotations

import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt as jose_jwt
from joserfc.jwk import OctKey, RSAKey
from pydantic import SecretStr

from fragments.app import create_app, state_of
from fragments.auth.oidc import Flow, Metadata, OidcConfig, SsoFailure, _validate_id_token
from fragments.config import Settings
from fragments.store.models import Team
from tests.accounts import bearer, sign_up
from tests.databases import APP_ROLE, PG_HOST, PG_PORT, PgDatabase
from tests.oidc_provider import (
    OidcProvider,
    follow,
    page_fragment,
    run_provider,
    submit_form,
)
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.anyio

DOMAIN = "acme.example"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def app_url() -> str:
    # The app is served in-process (an ASGI transport mounted at this address); the provider only
    # ever sends the browser here, it never connects itself.
    return f"http://127.0.0.1:{_free_port()}"


@pytest.fixture(scope="module")
def provider(app_url: str) -> Iterator[OidcProvider]:
    with run_provider(app_url + "/api/auth/oidc/callback") as running:
        yield running


@pytest.fixture(params=[True, False], ids=["guests", "no-guests"])
def guests(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@dataclass
class Browser:
    """One browser (one cookie jar) that reaches both the app and the provider."""

    client: httpx.AsyncClient
    app_url: str
    app: FastAPI

    async def start(self) -> httpx.Response:
        """Click "Sign in with ...": the provider's login page (or, when the provider remembers
        the person, the redirect back to the app's callback)."""
        response = await self.client.get(f"{self.app_url}/api/auth/oidc/login")
        return await follow(self.client, response, into_callback=False)

    async def at_provider(self, sub: str, *, fresh: bool = True) -> httpx.Response:
        """Sign in and consent at the provider: the redirect back to the app's callback, not yet
        followed (tests decide who delivers it). `fresh`: the provider has no session yet."""
        if fresh:
            self.client.cookies.clear()
        login = await self.start()
        if not fresh and login.is_redirect:
            return login
        assert login.status_code == 200, login.text
        assert 'name="login"' in login.text, login.text
        consent = await submit_form(self.client, login, {"login": sub, "password": "any"})
        assert consent.status_code == 200, consent.text
        assert "consent" in consent.text, consent.text
        response = await submit_form(self.client, consent, {}, into_callback=False)
        assert response.is_redirect, response.text
        return response

    async def sign_in(self, sub: str, *, fresh: bool = True) -> dict[str, str]:
        """The whole round trip; the page's `#...` result."""
        back = await self.at_provider(sub, fresh=fresh)
        callback = await self.client.get(back.url.join(back.headers["location"]))
        return page_fragment(callback)

    async def exchange(self, code: str) -> httpx.Response:
        return await self.client.post(f"{self.app_url}/api/auth/oidc/exchange", json={"code": code})

    async def tokens(self, sub: str, *, fresh: bool = True) -> dict[str, str]:
        result = await self.sign_in(sub, fresh=fresh)
        assert "sso" in result, result
        response = await self.exchange(result["sso"])
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def me(self, access_token: str) -> dict[str, object]:
        response = await self.client.get(
            f"{self.app_url}/api/auth/me", headers=bearer(access_token)
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def fresh(self) -> httpx.AsyncClient:
        """Another browser on the same app (its own cookies)."""
        return _client(self.app, self.app_url)


def _client(app: FastAPI, app_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        mounts={app_url: httpx.ASGITransport(app=app)}, follow_redirects=False, timeout=30
    )


def _settings(base: Settings, guests: bool, **extra: object) -> Settings:
    return base.model_copy(update={"allow_guests": guests, "sandbox_pool_sizes": {}, **extra})


@pytest.fixture
def team_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
async def browser(
    db_settings: Settings, guests: bool, provider: OidcProvider, app_url: str, team_id: str
) -> AsyncIterator[Browser]:
    settings = _settings(
        db_settings,
        guests,
        public_url=app_url,
        oidc_issuer=provider.issuer,
        oidc_client_id=provider.client_id,
        oidc_client_secret=SecretStr(provider.client_secret),
        oidc_name="Acme ID",
        oidc_team_domains={DOMAIN: team_id},
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with state_of(app).db.transaction() as session:
            session.add(Team(id=team_id, name="Acme", tier="pro", limits={}, personal=False))
        async with _client(app, app_url) as client:
            yield Browser(client, app_url, app)


def _person() -> tuple[str, str]:
    tag = secrets.token_hex(4)
    return f"person-{tag}", f"person-{tag}@example.com"


async def test_options_offer_the_button(browser: Browser, guests: bool) -> None:
    response = await browser.client.get(f"{browser.app_url}/api/auth/options")
    assert response.status_code == 200
    body = response.json()
    assert body["sso"] == {"name": "Acme ID", "login_url": "/api/auth/oidc/login"}
    assert body["guests"] is guests


async def test_first_sign_in_creates_the_user_and_the_second_finds_them(
    browser: Browser, provider: OidcProvider
) -> None:
    sub, email = _person()
    await provider.add_account(sub, email)
    first = await browser.tokens(sub)
    assert first["token_type"] == "bearer"
    me = await browser.me(first["access_token"])
    assert me["email"] == email
    assert me["guest"] is False
    teams = me["teams"]
    assert isinstance(teams, list)
    assert [t["role"] for t in teams] == ["owner"]

    # Signed in again, the provider remembering the person (no forms): the same user.
    again = await browser.tokens(sub, fresh=False)
    assert again["access_token"] != first["access_token"]
    assert (await browser.me(again["access_token"]))["id"] == me["id"]
    # And from another browser, signing in at the provider anew: the same user, by `sub`.
    async with browser.fresh() as other:
        third = await Browser(other, browser.app_url, browser.app).tokens(sub)
    assert (await browser.me(third["access_token"]))["id"] == me["id"]

    # The tokens are ordinary ones: refresh rotates them.
    refreshed = await browser.client.post(
        f"{browser.app_url}/api/auth/refresh", json={"refresh_token": again["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text


async def test_verified_domain_joins_the_team(
    browser: Browser, provider: OidcProvider, team_id: str
) -> None:
    tag = secrets.token_hex(4)
    verified, unverified = f"v-{tag}", f"u-{tag}"
    await provider.add_account(verified, f"{verified}@{DOMAIN.upper()}")
    await provider.add_account(unverified, f"{unverified}@{DOMAIN}", verified=False)

    me = await browser.me((await browser.tokens(verified))["access_token"])
    roles = {t["id"]: t["role"] for t in me["teams"]}  # type: ignore[attr-defined]
    assert roles[team_id] == "member"
    assert len(roles) == 2
    # The personal team stays the default one.
    assert me["team_id"] != team_id

    # A second sign-in does not join twice.
    me = await browser.me((await browser.tokens(verified))["access_token"])
    assert len(me["teams"]) == 2  # type: ignore[arg-type]

    # An unverified address at the domain proves nothing: no team, and no e-mail kept.
    me = await browser.me((await browser.tokens(unverified))["access_token"])
    assert [t["id"] for t in me["teams"]] != [team_id]  # type: ignore[attr-defined]
    assert len(me["teams"]) == 1  # type: ignore[arg-type]
    assert me["email"] is None


async def test_an_existing_account_is_never_taken_over(
    browser: Browser, provider: OidcProvider
) -> None:
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=browser.app), base_url=browser.app_url
    )
    async with api:
        account = await sign_up(api, "owner")
    sub = f"taker-{secrets.token_hex(4)}"
    await provider.add_account(sub, account.email.upper())
    assert await browser.sign_in(sub) == {"sso_error": "email_taken"}

    # The same address unverified is not a claim on it: a separate account without an e-mail.
    other = f"other-{secrets.token_hex(4)}"
    await provider.add_account(other, account.email, verified=False)
    me = await browser.me((await browser.tokens(other))["access_token"])
    assert me["email"] is None


async def test_forged_and_mismatched_callbacks_are_refused(
    browser: Browser, provider: OidcProvider
) -> None:
    sub, email = _person()
    await provider.add_account(sub, email)
    callback = f"{browser.app_url}/api/auth/oidc/callback"

    # A callback nobody started here.
    forged = await browser.client.get(callback, params={"code": "x", "state": "y"})
    assert page_fragment(forged) == {"sso_error": "state_mismatch"}

    # A real answer from the provider, delivered to another browser (login CSRF): that
    # browser began its own sign-in, with another state.
    back = await browser.at_provider(sub)
    real_callback = back.url.join(back.headers["location"])
    async with browser.fresh() as victim_client:
        victim = Browser(victim_client, browser.app_url, browser.app)
        await victim.start()
        refused = await victim_client.get(real_callback)
        assert page_fragment(refused) == {"sso_error": "state_mismatch"}
        # And to a browser with no sign-in under way at all.
        async with browser.fresh() as bare:
            assert page_fragment(await bare.get(real_callback)) == {"sso_error": "state_mismatch"}

    # The right browser, the wrong state.
    tampered = real_callback.copy_set_param("state", "not-the-state")
    assert page_fragment(await browser.client.get(tampered)) == {"sso_error": "state_mismatch"}

    # The right browser and state, but the answer claims another issuer (RFC 9207 mix-up).
    back = await browser.at_provider(sub)
    mixed = back.url.join(back.headers["location"]).copy_set_param("iss", "https://evil.example")
    assert page_fragment(await browser.client.get(mixed)) == {"sso_error": "invalid_token"}


async def test_a_sign_in_code_works_once(browser: Browser, provider: OidcProvider) -> None:
    sub, email = _person()
    await provider.add_account(sub, email)
    result = await browser.sign_in(sub)
    first = await browser.exchange(result["sso"])
    assert first.status_code == 200, first.text
    replay = await browser.exchange(result["sso"])
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_code"
    # Neither a refresh token nor a made-up code is a sign-in code.
    for code in (first.json()["refresh_token"], "sso_" + secrets.token_urlsafe(32)):
        refused = await browser.exchange(code)
        assert refused.status_code == 401
        assert refused.json() == {
            "error": "invalid_code",
            "detail": "The sign-in link has expired or was used; sign in again.",
        }
    # The exchanged tokens still work after the replay attempts.
    await browser.me(first.json()["access_token"])


async def test_a_replayed_provider_answer_is_refused(
    browser: Browser, provider: OidcProvider
) -> None:
    sub, email = _person()
    await provider.add_account(sub, email)
    back = await browser.at_provider(sub)
    callback = back.url.join(back.headers["location"])
    assert "sso" in page_fragment(await browser.client.get(callback))
    # The flow cookie is gone and the provider's code is spent.
    assert page_fragment(await browser.client.get(callback)) == {"sso_error": "state_mismatch"}


async def test_cancelling_at_the_provider(browser: Browser) -> None:
    login = await browser.start()
    response = await browser.client.get(str(login.url) + "/abort")
    # The provider sends the browser back with error=access_denied; the app sends it on.
    assert page_fragment(await follow(browser.client, response)) == {"sso_error": "cancelled"}


async def test_provider_down(
    db_settings: Settings, guests: bool, provider: OidcProvider, app_url: str
) -> None:
    settings = _settings(
        db_settings,
        guests,
        public_url=app_url,
        oidc_issuer=f"http://127.0.0.1:{_free_port()}",
        oidc_client_id="fragments-test",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), _client(app, app_url) as client:
        response = await client.get(f"{app_url}/api/auth/oidc/login")
        assert page_fragment(response) == {"sso_error": "provider_unavailable"}


async def test_database_down_at_the_callback(
    settings: Settings,
    guests: bool,
    provider: OidcProvider,
    app_url: str,
    pg_database: PgDatabase | None,
) -> None:
    if pg_database is None:
        pytest.skip(
            "PostgreSQL at 127.0.0.1:5432 is unreachable (it runs on the dev and CI machines)"
        )
    proxy = TcpProxy(PG_HOST, PG_PORT)
    # PostgreSQL only: the outage is a cut proxy in front of it.
    settings = _settings(
        settings,
        guests,
        public_url=app_url,
        oidc_issuer=provider.issuer,
        oidc_client_id=provider.client_id,
        oidc_client_secret=SecretStr(provider.client_secret),
        # Through a proxy of the test's own, which it cuts (the shared server is never touched).
        database_url=pg_database.url(APP_ROLE, port=proxy.port),
        database_migration_url=pg_database.owner_url,
        database_app_role=APP_ROLE,
    )
    sub, email = _person()
    await provider.add_account(sub, email)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app), _client(app, app_url) as client:
            browser = Browser(client, app_url, app)
            back = await browser.at_provider(sub)
            proxy.cut()
            callback = await client.get(back.url.join(back.headers["location"]))
            assert page_fragment(callback) == {"sso_error": "server_unavailable"}
            down = await browser.exchange("sso_" + secrets.token_urlsafe(32))
            assert down.status_code == 503
            assert down.json()["error"] == "database_unavailable"
            # Back up: signing in again works.
            proxy.restore()
            await browser.me((await browser.tokens(sub))["access_token"])
    finally:
        proxy.close()


async def test_sso_off_without_an_issuer(db_settings: Settings, guests: bool) -> None:
    app = create_app(_settings(db_settings, guests))
    async with app.router.lifespan_context(app), _client(app, "http://test") as client:
        options = await client.get("http://test/api/auth/options")
        assert options.json()["sso"] is None
        for method, path in (
            ("GET", "/api/auth/oidc/login"),
            ("GET", "/api/auth/oidc/callback?code=x&state=y"),
            ("POST", "/api/auth/oidc/exchange"),
        ):
            response = await client.request(method, "http://test" + path, json={"code": "sso_x"})
            assert response.status_code == 404, (path, response.text)
            assert response.json() == {
                "error": "sso_disabled",
                "detail": "Single sign-on is not configured on this server.",
            }


# The ID token's checks, on tokens signed here with real keys (the provider above only ever
# signs good ones).
_CONFIG = OidcConfig(
    issuer="https://id.example",
    client_id="fragments",
    client_secret="secret",
    scopes="openid email",
    redirect_uri="https://app.example/api/auth/oidc/callback",
    secure_cookie=True,
)
_METADATA = Metadata(
    issuer="https://id.example",
    authorization_endpoint="https://id.example/auth",
    token_endpoint="https://id.example/token",
    jwks_uri="https://id.example/jwks",
    userinfo_endpoint=None,
    algorithms=frozenset({"RS256"}),
)
_FLOW = Flow(state="s", nonce="the-nonce", verifier="v" * 64)
_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})


def _id_token(key: RSAKey = _KEY, alg: str = "RS256", **changes: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "https://id.example",
        "aud": "fragments",
        "sub": "person-1",
        "iat": now,
        "exp": now + 300,
        "nonce": "the-nonce",
    }
    for name, value in changes.items():
        # None removes the claim.
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    return jose_jwt.encode({"alg": alg, "kid": key.kid}, claims, key)


def _jwks(*keys: RSAKey) -> dict[str, object]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def test_a_good_id_token_is_accepted() -> None:
    claims = _validate_id_token(_id_token(), _jwks(_KEY), _METADATA, _CONFIG, _FLOW)
    assert claims["sub"] == "person-1"


@pytest.mark.parametrize(
    "changes",
    [
        {"nonce": "another"},
        {"aud": "someone-else"},
        {"aud": ["fragments", "someone-else"]},  # several audiences and no azp naming us
        {"iss": "https://evil.example"},
        {"exp": int(time.time()) - 3600},
        {"nonce": None},
    ],
    ids=["nonce", "aud", "azp", "iss", "expired", "no-nonce"],
)
def test_a_wrong_claim_is_refused(changes: dict[str, object]) -> None:
    token = _id_token(**changes)
    with pytest.raises(SsoFailure) as failure:
        _validate_id_token(token, _jwks(_KEY), _METADATA, _CONFIG, _FLOW)
    assert failure.value.code == "invalid_token"


def test_a_token_signed_by_another_key_is_refused() -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})
    with pytest.raises(SsoFailure) as failure:
        _validate_id_token(_id_token(stranger), _jwks(_KEY), _METADATA, _CONFIG, _FLOW)
    assert failure.value.code == "invalid_token"


def test_a_symmetric_token_is_refused() -> None:
    # Signed with a public value (the client id) as an HMAC key: never a provider's signature.
    secret = OctKey.import_key("fragments-" * 4, parameters={"kid": "k1"})
    token = jose_jwt.encode(
        {"alg": "HS256", "kid": "k1"},
        {"iss": "https://id.example", "aud": "fragments", "sub": "x", "nonce": "the-nonce"},
        secret,
    )
    with pytest.raises(SsoFailure):
        _validate_id_token(token, {"keys": [secret.as_dict()]}, _METADATA, _CONFIG, _FLOW)


@pytest.mark.parametrize(
    "value",
    [
        '{"Acme.example": "t1", "b.org": "t2"}',
        "acme.example=t1, @B.org=t2",
        "acme.example=t1,b.org=t2,",
    ],
)
def test_team_domains_from_the_environment(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAGMENTS_OIDC_TEAM_DOMAINS", value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.oidc_team_domains == {"acme.example": "t1", "b.org": "t2"}


def test_bad_team_domains_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAGMENTS_OIDC_TEAM_DOMAINS", "acme.example")
    with pytest.raises(ValueError, match="domain=team_id"):
        Settings(_env_file=None)  # type: ignore[call-arg]
