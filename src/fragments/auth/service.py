"""Accounts: sign-up (claiming a guest), sign-in, guests, sessions with rotated refresh tokens,
team switching, personal API tokens. Functions take a session and only flush."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.auth.tokens import (
    API_TOKEN_PREFIX,
    AccessClaims,
    Forbidden,
    Unauthorized,
    digest,
    hash_password,
    issue_access_token,
    new_opaque_token,
    verify_password,
)
from fragments.config import Settings
from fragments.errors import BadRequest, FragmentsError
from fragments.store.db import aware
from fragments.store.models import ApiToken, AuthSession, Membership, Team, User

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 8


class Conflict(FragmentsError):
    status_code = 409
    code = "conflict"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    # Whose session it is (product analytics names the account that signed up).
    user_id: str | None = None


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise BadRequest("Enter a valid email address.", code="invalid_email")
    return email


async def _personal_team(session: AsyncSession, user: User, name: str) -> Team:
    team = Team(name=name, tier="free", limits={}, personal=True)
    session.add(team)
    await session.flush()
    session.add(Membership(user_id=user.id, team_id=team.id, role="owner", is_default=True))
    await session.flush()
    return team


async def default_team_id(session: AsyncSession, user_id: str) -> str:
    rows = await session.execute(
        select(Membership.team_id)
        .where(Membership.user_id == user_id)
        .order_by(Membership.is_default.desc(), Membership.created_at)
        .limit(1)
    )
    team_id = rows.scalar_one_or_none()
    if team_id is None:
        raise Unauthorized("This account belongs to no team.", "no_team")
    return team_id


async def start_session(
    session: AsyncSession, settings: Settings, user: User, team_id: str
) -> TokenPair:
    """A new sign-in: a session row holding the refresh token's hash, and both tokens."""
    refresh = new_opaque_token()
    row = AuthSession(
        user_id=user.id,
        team_id=team_id,
        refresh_hash=digest(refresh),
        expires_at=datetime.now(UTC) + timedelta(days=settings.refresh_token_days),
    )
    session.add(row)
    await session.flush()
    return TokenPair(_access(settings, user, team_id, row.id), refresh, user_id=user.id)


def _access(settings: Settings, user: User, team_id: str, session_id: str) -> str:
    claims = AccessClaims(user.id, team_id, session_id, user.is_guest)
    return issue_access_token(
        claims, settings.secret_key.get_secret_value(), settings.access_token_minutes
    )


class EmailUnconfirmed(Forbidden):
    code = "email_unconfirmed"


async def signup(
    session: AsyncSession,
    settings: Settings,
    email: str,
    password: str,
    *,
    guest_user_id: str | None = None,
) -> TokenPair:
    """Create an account; a guest's account (and so all its work) becomes the new account."""
    user, team_id = await create_account(session, email, password, guest_user_id=guest_user_id)
    return await start_session(session, settings, user, team_id)


async def create_account(
    session: AsyncSession, email: str, password: str, *, guest_user_id: str | None = None
) -> tuple[User, str]:
    """The account and its default team, not signed in (sign-up with address confirmation)."""
    email = normalise_email(email)
    if len(password) < MIN_PASSWORD:
        raise BadRequest(
            f"Choose a password of at least {MIN_PASSWORD} characters.", code="weak_password"
        )
    taken = await session.execute(select(User.id).where(User.email == email))
    if taken.scalar_one_or_none() is not None:
        raise Conflict("An account with this email already exists; sign in instead.")
    user = await session.get(User, guest_user_id) if guest_user_id else None
    if user is not None and user.is_guest:
        user.email = email
        user.password_hash = hash_password(password)
        user.is_guest = False
        await session.flush()
        team_id = await default_team_id(session, user.id)
        team = await session.get(Team, team_id)
        if team is not None and team.personal:
            team.name = email.split("@")[0]
        # Sessions minted as a guest end: the guest token must not keep acting for the account.
        await session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    else:
        user = User(email=email, password_hash=hash_password(password), is_guest=False)
        session.add(user)
        try:
            await session.flush()
        except IntegrityError as exc:  # the same email signing up twice at once
            raise Conflict("An account with this email already exists; sign in instead.") from exc
        team_id = (await _personal_team(session, user, email.split("@")[0])).id
    return user, team_id


async def login(session: AsyncSession, settings: Settings, email: str, password: str) -> TokenPair:
    rows = await session.execute(select(User).where(User.email == email.strip().lower()))
    user = rows.scalar_one_or_none()
    if not verify_password(password, user.password_hash if user else None) or user is None:
        raise Unauthorized("The email or the password is wrong.", "invalid_credentials")
    # Told only after the password matched, so it reveals nothing about unknown addresses.
    if settings.require_email_confirmation and user.email_confirmed_at is None:
        raise EmailUnconfirmed(
            "Confirm your email address first: follow the link we sent you, or ask for a new one."
        )
    return await start_session(session, settings, user, await default_team_id(session, user.id))


async def guest(session: AsyncSession, settings: Settings) -> TokenPair:
    user = User(is_guest=True)
    session.add(user)
    await session.flush()
    team = await _personal_team(session, user, "Guest")
    return await start_session(session, settings, user, team.id)


async def _live_session(session: AsyncSession, refresh_token: str) -> AuthSession:
    rows = await session.execute(
        select(AuthSession).where(AuthSession.refresh_hash == digest(refresh_token))
    )
    row = rows.scalar_one_or_none()
    if row is None or row.revoked_at is not None or aware(row.expires_at) <= datetime.now(UTC):
        raise Unauthorized("The refresh token is not valid; sign in again.", "invalid_token")
    return row


async def refresh(session: AsyncSession, settings: Settings, refresh_token: str) -> TokenPair:
    """Rotate: the old refresh token stops working, a new pair is issued for the same session."""
    row = await _live_session(session, refresh_token)
    user = await session.get(User, row.user_id)
    if user is None:
        raise Unauthorized("The refresh token is not valid; sign in again.", "invalid_token")
    if await membership(session, user.id, row.team_id) is None:
        # Removed from the team meanwhile: the session falls back to the default team.
        row.team_id = await default_team_id(session, user.id)
    new_refresh = new_opaque_token()
    row.refresh_hash = digest(new_refresh)
    row.expires_at = datetime.now(UTC) + timedelta(days=settings.refresh_token_days)
    await session.flush()
    return TokenPair(_access(settings, user, row.team_id, row.id), new_refresh)


async def logout(session: AsyncSession, session_id: str) -> None:
    """Revoke the session: its refresh token and every access token carrying its id."""
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


async def logout_refresh(session: AsyncSession, refresh_token: str) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.refresh_hash == digest(refresh_token))
        .values(revoked_at=datetime.now(UTC))
    )


async def me(session: AsyncSession, user_id: str) -> tuple[User, list[tuple[Team, Membership]]]:
    """The caller's account and their teams with their memberships, oldest membership first."""
    row = await session.get(User, user_id)
    if row is None:
        raise Unauthorized()
    teams = await session.execute(
        select(Team, Membership)
        .join(Membership, Membership.team_id == Team.id)
        .where(Membership.user_id == row.id)
        .order_by(Membership.created_at)
    )
    return row, [(team, m) for team, m in teams.all()]


async def membership(session: AsyncSession, user_id: str, team_id: str) -> Membership | None:
    rows = await session.execute(
        select(Membership).where(Membership.user_id == user_id, Membership.team_id == team_id)
    )
    return rows.scalar_one_or_none()


async def switch_team(
    session: AsyncSession, settings: Settings, user_id: str, session_id: str | None, team_id: str
) -> TokenPair:
    if await membership(session, user_id, team_id) is None:
        raise Forbidden("You are not a member of this team.", code="not_a_member")
    user = await session.get(User, user_id)
    if user is None:
        raise Unauthorized()
    if session_id:
        await logout(session, session_id)
    return await start_session(session, settings, user, team_id)


async def create_api_token(
    session: AsyncSession, user_id: str, team_id: str, name: str
) -> tuple[ApiToken, str]:
    token = new_opaque_token(API_TOKEN_PREFIX)
    row = ApiToken(user_id=user_id, team_id=team_id, name=name[:200], token_hash=digest(token))
    session.add(row)
    await session.flush()
    return row, token
