"""OpenID Connect sign-in, our side: the provider's person becomes a local user (by issuer and
`sub`), joins the team of their verified e-mail domain, and gets a one-time sign-in code the page
exchanges for tokens. Functions take a session and only flush.

Accounts are never merged by e-mail: a verified e-mail that another account already uses is
refused (`email_taken`), because linking automatically would hand a password account to whoever
controls an identity at the provider, and a silent second account would hide the person's work.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.auth.oidc import OidcIdentity, SsoFailure
from fragments.auth.service import TokenPair, _personal_team, default_team_id, membership
from fragments.auth.tokens import (
    AccessClaims,
    Unauthorized,
    digest,
    issue_access_token,
    new_opaque_token,
)
from fragments.config import Settings
from fragments.store.db import aware
from fragments.store.models import AuthSession, Membership, Team, User

log = structlog.get_logger(__name__)

# A sign-in code lives this long and works once.
EXCHANGE_SECONDS = 60
# Codes are told apart from refresh tokens, so `exchange` never accepts a refresh token.
CODE_PREFIX = "sso_"
_EXTERNAL_ID_MAX = 255


def external_id(issuer: str, sub: str) -> str:
    """The user's key: `sub` is unique only within its issuer, so both make the key."""
    key = f"oidc:{issuer}#{sub}"
    if len(key) <= _EXTERNAL_ID_MAX:
        return key
    return "oidc:sha256:" + hashlib.sha256(f"{issuer}#{sub}".encode()).hexdigest()


async def _join_domain_team(
    session: AsyncSession, settings: Settings, user: User, email: str | None
) -> None:
    if email is None:
        return
    team_id = settings.oidc_team_domains.get(email.rsplit("@", 1)[-1])
    if team_id is None or await membership(session, user.id, team_id) is not None:
        return
    if await session.get(Team, team_id) is None:
        log.warning("oidc_team_missing", team_id=team_id)
        return
    session.add(Membership(user_id=user.id, team_id=team_id, role="member", is_default=False))
    await session.flush()


async def _new_user(session: AsyncSession, key: str, identity: OidcIdentity) -> User:
    email = identity.verified_email
    if email is not None:
        taken = await session.execute(select(User.id).where(User.email == email))
        if taken.scalar_one_or_none() is not None:
            raise SsoFailure("email_taken", "another account has this e-mail")
    # An unverified e-mail is not stored: it would block its real owner from signing up.
    user = User(external_id=key, email=email, is_guest=False)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # the same e-mail signing up at the same moment
        raise SsoFailure("email_taken", "another account has this e-mail") from exc
    name = email.split("@")[0] if email else (identity.name or "Personal")
    await _personal_team(session, user, name[:200])
    return user


async def sign_in(
    session: AsyncSession, settings: Settings, issuer: str, identity: OidcIdentity
) -> str:
    """Find or create the user, join their domain's team, and return a one-time sign-in code."""
    key = external_id(issuer, identity.sub)
    rows = await session.execute(select(User).where(User.external_id == key))
    user = rows.scalar_one_or_none()
    if user is None:
        user = await _new_user(session, key, identity)
    await _join_domain_team(session, settings, user, identity.verified_email)
    team_id = await default_team_id(session, user.id)
    code = CODE_PREFIX + new_opaque_token()
    # The session waits for the page with the code's hash in place of a refresh token; the
    # exchange rotates it to a real one, so the code is spent by the same atomic update.
    session.add(
        AuthSession(
            user_id=user.id,
            team_id=team_id,
            refresh_hash=digest(code),
            expires_at=datetime.now(UTC) + timedelta(seconds=EXCHANGE_SECONDS),
        )
    )
    await session.flush()
    return code


async def exchange(session: AsyncSession, settings: Settings, code: str) -> TokenPair:
    """The token pair for a sign-in code: once, within its minute."""
    refused = Unauthorized(
        "The sign-in link has expired or was used; sign in again.", "invalid_code"
    )
    if not code.startswith(CODE_PREFIX):
        raise refused
    rows = await session.execute(
        select(AuthSession).where(AuthSession.refresh_hash == digest(code))
    )
    row = rows.scalar_one_or_none()
    if row is None or row.revoked_at is not None or aware(row.expires_at) <= datetime.now(UTC):
        raise refused
    user = await session.get(User, row.user_id)
    if user is None:
        raise refused
    refresh = new_opaque_token()
    spent = await session.execute(
        update(AuthSession)
        .where(AuthSession.id == row.id, AuthSession.refresh_hash == digest(code))
        .values(
            refresh_hash=digest(refresh),
            expires_at=datetime.now(UTC) + timedelta(days=settings.refresh_token_days),
        )
        .execution_options(synchronize_session=False)
    )
    # Another request spent the code between our read and our write.
    if int(getattr(spent, "rowcount", 0) or 0) != 1:
        raise refused
    access = issue_access_token(
        AccessClaims(user.id, row.team_id, row.id, user.is_guest),
        settings.secret_key.get_secret_value(),
        settings.access_token_minutes,
    )
    return TokenPair(access, refresh)
