"""Passwords (argon2), access tokens (PyJWT, HS256), and opaque refresh and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fragments.errors import FragmentsError

_HASHER = PasswordHasher()
# A real hash to verify against when the email is unknown, so timing does not tell.
_DUMMY_HASH = _HASHER.hash("not a password anyone uses")
ALGORITHM = "HS256"
API_TOKEN_PREFIX = "fra_"
TokenKind = Literal["access", "guest"]


class Unauthorized(FragmentsError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, detail: str = "Sign in to continue.", code: str | None = None) -> None:
        super().__init__(detail, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(FragmentsError):
    status_code = 403
    code = "forbidden"


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    """Constant-ish time whether or not the user exists."""
    try:
        return _HASHER.verify(hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def new_opaque_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """What is stored of a refresh or API token: its SHA-256 (the token itself is random)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    team_id: str
    session_id: str
    guest: bool


def issue_access_token(
    claims: AccessClaims, secret: str, minutes: int, *, now: datetime | None = None
) -> str:
    now = now or datetime.now(UTC)
    payload = {
        "sub": claims.user_id,
        "team": claims.team_id,
        "sid": claims.session_id,
        "guest": claims.guest,
        "typ": "access",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, secret: str) -> AccessClaims:
    """Verify signature, algorithm and expiry; anything else is a 401."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub", "team", "sid", "typ"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The access token has expired; refresh it.", "token_expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("The access token is not valid.", "invalid_token") from exc
    if payload.get("typ") != "access":
        raise Unauthorized("The access token is not valid.", "invalid_token")
    values = (payload["sub"], payload["team"], payload["sid"])
    if not all(isinstance(v, str) and v for v in values):
        raise Unauthorized("The access token is not valid.", "invalid_token")
    return AccessClaims(
        user_id=payload["sub"],
        team_id=payload["team"],
        session_id=payload["sid"],
        guest=bool(payload.get("guest", False)),
    )


def decode_supabase_token(token: str, secret: str) -> tuple[str, str | None]:
    """A Supabase-issued access token: (its `sub`, its email)."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience="authenticated",
            options={"require": ["exp", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized("The access token is not valid.", "invalid_token") from exc
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("The access token is not valid.", "invalid_token")
    email = payload.get("email")
    return sub, email if isinstance(email, str) and email else None
