"""OpenID Connect sign-in, the provider's side: discovery, the authorization request (code flow
with PKCE, `state` and `nonce` kept in a short-lived signed cookie so any app process can finish
the flow), the code exchange and the ID token's validation (JWKS signature, iss, aud, exp, nonce).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

# Authlib's httpx integration runs on httpx2 (it prefers it when installed, as here).
import httpx2
import jwt
from authlib.common.security import is_secure_transport
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fragments.config import Settings
from fragments.errors import NotFound

# What went wrong, as the page is told in `/#sso_error=<code>` (the UI words each one).
SsoErrorCode = Literal[
    "cancelled",  # the user declined at the provider
    "provider_error",  # the provider answered the sign-in with an error of its own
    "state_mismatch",  # no flow cookie, an expired one, or a callback this browser never began
    "provider_unavailable",  # discovery, keys or the token endpoint could not be reached
    "invalid_token",  # the code was refused or the ID token failed validation
    "email_taken",  # a verified e-mail that another account already has (never merged)
    "server_unavailable",  # our own database did not answer
]

FLOW_COOKIE = "fragments_oidc"
FLOW_COOKIE_PATH = "/api/auth/oidc"
FLOW_SECONDS = 600
CALLBACK_PATH = "/api/auth/oidc/callback"
HTTP_TIMEOUT = httpx2.Timeout(10.0)
# Seconds of clock difference tolerated between us and the provider.
CLOCK_LEEWAY = 60
# ID tokens must be signed with the provider's keys: symmetric (client-secret) and unsigned
# tokens are refused, whatever the provider advertises.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class SsoDisabled(NotFound):
    code = "sso_disabled"

    def __init__(self) -> None:
        super().__init__("Single sign-on is not configured on this server.")


class SsoFailure(Exception):
    """A sign-in that cannot finish; the callback sends the page to `/#sso_error=<code>`."""

    def __init__(self, code: SsoErrorCode, why: str) -> None:
        super().__init__(why)
        self.code: SsoErrorCode = code


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str
    redirect_uri: str
    secure_cookie: bool


def config_from(settings: Settings) -> OidcConfig:
    """The configured provider, or 404 `sso_disabled` when there is none."""
    if not settings.oidc_issuer or not settings.oidc_client_id:
        raise SsoDisabled()
    secret = settings.oidc_client_secret
    public = settings.resolved_public_url
    return OidcConfig(
        issuer=settings.oidc_issuer.rstrip("/"),
        client_id=settings.oidc_client_id,
        client_secret=secret.get_secret_value() if secret else "",
        scopes=settings.oidc_scopes,
        redirect_uri=public + CALLBACK_PATH,
        secure_cookie=public.startswith("https://"),
    )


@dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    algorithms: frozenset[str]
    # The provider names itself in its answers (RFC 9207), which the callback then requires.
    iss_in_response: bool = False


@dataclass(frozen=True)
class Flow:
    """What the callback checks the provider's answer against."""

    state: str
    nonce: str
    verifier: str


@dataclass(frozen=True)
class OidcIdentity:
    """The signed-in person as the provider vouches for them."""

    sub: str
    email: str | None
    email_verified: bool
    name: str | None

    @property
    def verified_email(self) -> str | None:
        """The e-mail, lower-cased, only when the provider says it verified it."""
        return self.email.strip().lower() if self.email and self.email_verified else None


def _require_secure(url: str, what: str) -> str:
    # Plain http is accepted for loopback providers only (Authlib's rule: tests and local
    # development), or when AUTHLIB_INSECURE_TRANSPORT is set by the operator.
    if not is_secure_transport(url):
        raise SsoFailure("provider_error", f"the provider's {what} is not https: {url}")
    return url


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise SsoFailure("provider_error", f"the discovery document has no {key}")
    return value


async def _get_json(client: httpx2.AsyncClient, url: str, what: str) -> dict[str, Any]:
    try:
        # auth=None: public documents, sent without the access token (Authlib adds it otherwise).
        response = await client.get(url, auth=None, timeout=HTTP_TIMEOUT)
    except httpx2.HTTPError as exc:
        raise SsoFailure("provider_unavailable", f"{what}: {type(exc).__name__}") from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise SsoFailure("provider_unavailable", f"{what}: HTTP {response.status_code}")
    if response.status_code != 200:
        raise SsoFailure("provider_error", f"{what}: HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise SsoFailure("provider_error", f"{what} is not JSON") from exc
    if not isinstance(body, dict):
        raise SsoFailure("provider_error", f"{what} is not a JSON object")
    return body


async def discover(client: httpx2.AsyncClient, config: OidcConfig) -> Metadata:
    """The provider's endpoints from `<issuer>/.well-known/openid-configuration`."""
    url = _require_secure(config.issuer + "/.well-known/openid-configuration", "issuer")
    doc = await _get_json(client, url, "discovery")
    issuer = _text(doc, "issuer")
    # The document must speak for the configured issuer (OpenID Connect Discovery, 4.3).
    if issuer.rstrip("/") != config.issuer:
        raise SsoFailure("provider_error", f"discovery names another issuer: {issuer}")
    advertised = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = frozenset(a for a in advertised if a in ASYMMETRIC_ALGORITHMS)
    if not algorithms:
        raise SsoFailure("provider_error", "the provider signs ID tokens with no accepted key")
    userinfo = doc.get("userinfo_endpoint")
    return Metadata(
        issuer=issuer,
        authorization_endpoint=_require_secure(
            _text(doc, "authorization_endpoint"), "authorization endpoint"
        ),
        token_endpoint=_require_secure(_text(doc, "token_endpoint"), "token endpoint"),
        jwks_uri=_require_secure(_text(doc, "jwks_uri"), "JWKS"),
        userinfo_endpoint=_require_secure(userinfo, "userinfo endpoint")
        if isinstance(userinfo, str) and userinfo
        else None,
        algorithms=algorithms,
        iss_in_response=doc.get("authorization_response_iss_parameter_supported") is True,
    )


def _oauth_client(config: OidcConfig) -> Any:
    # Authlib is untyped: its client stays inside this module.
    return AsyncOAuth2Client(
        client_id=config.client_id,
        client_secret=config.client_secret,
        scope=config.scopes,
        redirect_uri=config.redirect_uri,
        code_challenge_method="S256",
        # Without a secret the client is a public one: PKCE alone binds the code to us.
        token_endpoint_auth_method="client_secret_basic" if config.client_secret else "none",
        timeout=HTTP_TIMEOUT,
    )


async def begin(config: OidcConfig) -> tuple[str, Flow]:
    """The provider's authorization URL and the flow the callback will check."""
    flow = Flow(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier=secrets.token_urlsafe(64),
    )
    async with _oauth_client(config) as client:
        metadata = await discover(client, config)
        url, _ = client.create_authorization_url(
            metadata.authorization_endpoint,
            state=flow.state,
            code_verifier=flow.verifier,
            nonce=flow.nonce,
        )
    return str(url), flow


def seal_flow(flow: Flow, secret: str) -> str:
    """The flow cookie's value: signed, expiring, bound to its purpose."""
    now = datetime.now(UTC)
    payload = {
        "typ": "oidc_flow",
        "state": flow.state,
        "nonce": flow.nonce,
        "verifier": flow.verifier,
        "exp": int((now + timedelta(seconds=FLOW_SECONDS)).timestamp()),
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def open_flow(cookie: str | None, state: str | None, secret: str) -> Flow:
    """The flow this browser began, if the callback's `state` is the one it was given."""
    if not cookie:
        raise SsoFailure("state_mismatch", "no sign-in was started in this browser")
    try:
        payload = jwt.decode(
            cookie,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp", "typ", "state", "nonce", "verifier"]},
        )
    except jwt.PyJWTError as exc:
        raise SsoFailure("state_mismatch", "the sign-in cookie is invalid or expired") from exc
    if payload["typ"] != "oidc_flow":
        raise SsoFailure("state_mismatch", "the sign-in cookie is invalid")
    expected = str(payload["state"])
    if not state or not hmac.compare_digest(state.encode(), expected.encode()):
        raise SsoFailure("state_mismatch", "the callback's state is not this browser's")
    return Flow(state=expected, nonce=str(payload["nonce"]), verifier=str(payload["verifier"]))


def _validate_id_token(
    id_token: str, keys: dict[str, Any], metadata: Metadata, config: OidcConfig, flow: Flow
) -> dict[str, Any]:
    try:
        keyset = KeySet.import_key_set(keys)  # type: ignore[arg-type]  # checked by joserfc
        token = jose_jwt.decode(id_token, keyset, algorithms=sorted(metadata.algorithms))
        claims = dict(token.claims)
        jose_jwt.JWTClaimsRegistry(
            leeway=CLOCK_LEEWAY,
            iss={"essential": True, "value": metadata.issuer},
            aud={"essential": True, "value": config.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": flow.nonce},
        ).validate(claims)
    except (JoseError, ValueError, TypeError) as exc:
        raise SsoFailure("invalid_token", f"ID token: {type(exc).__name__}: {exc}") from exc
    audience = claims.get("aud")
    # Several audiences: the token must have been issued to us (OpenID Connect Core, 3.1.3.7).
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != config.client_id:
        raise SsoFailure("invalid_token", "ID token: issued to another party (azp)")
    return claims


def _identity(claims: dict[str, Any], userinfo: dict[str, Any] | None) -> OidcIdentity:
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise SsoFailure("invalid_token", "ID token: no subject")
    merged = dict(claims)
    if userinfo is not None:
        # The userinfo answer must be about the same person (OpenID Connect Core, 5.3.2).
        if userinfo.get("sub") != sub:
            raise SsoFailure("invalid_token", "userinfo is about another subject")
        merged.update(userinfo)
    email = merged.get("email")
    verified = merged.get("email_verified")
    name = merged.get("name")
    return OidcIdentity(
        sub=sub,
        email=email if isinstance(email, str) and email else None,
        # Some providers send the flag as a string.
        email_verified=verified is True or verified == "true",
        name=name if isinstance(name, str) and name else None,
    )


async def complete(
    config: OidcConfig, code: str, flow: Flow, iss: str | None = None
) -> OidcIdentity:
    """Exchange the code (with the PKCE verifier), validate the ID token, read the claims.
    `iss` is the callback's own issuer parameter, when the provider sends one."""
    async with _oauth_client(config) as client:
        metadata = await discover(client, config)
        # An answer from another provider (a mix-up) is refused before its code is spent.
        if (iss is not None or metadata.iss_in_response) and iss != metadata.issuer:
            raise SsoFailure("invalid_token", "the answer names another issuer")
        try:
            token = await client.fetch_token(
                metadata.token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=flow.verifier,
            )
        except OAuthError as exc:
            raise SsoFailure("invalid_token", f"token endpoint refused: {exc}") from exc
        except httpx2.HTTPStatusError as exc:
            raise SsoFailure(
                "provider_unavailable", f"token endpoint: HTTP {exc.response.status_code}"
            ) from exc
        except httpx2.HTTPError as exc:
            raise SsoFailure("provider_unavailable", f"token endpoint: {exc!r}") from exc
        except ValueError as exc:
            raise SsoFailure("provider_error", f"token endpoint: {exc}") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SsoFailure("invalid_token", "the token answer has no ID token")
        keys = await _get_json(client, metadata.jwks_uri, "JWKS")
        claims = _validate_id_token(id_token, keys, metadata, config, flow)
        userinfo: dict[str, Any] | None = None
        if metadata.userinfo_endpoint and token.get("access_token"):
            try:
                response = await client.get(metadata.userinfo_endpoint)
            except httpx2.HTTPError as exc:
                raise SsoFailure("provider_unavailable", f"userinfo: {exc!r}") from exc
            if response.status_code == 200:
                try:
                    body = response.json()
                except ValueError:
                    # A signed userinfo answer (application/jwt): the ID token's claims serve.
                    body = None
                userinfo = body if isinstance(body, dict) else None
    return _identity(claims, userinfo)
