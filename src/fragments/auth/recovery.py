"""Mailed single-use links: password reset and address confirmation. Functions take a session
and only flush; the caller sends the returned mail once the transaction has committed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.auth import service
from fragments.auth.mail import Mail
from fragments.auth.tokens import digest, hash_password, new_opaque_token
from fragments.config import Settings
from fragments.errors import BadRequest, FragmentsError
from fragments.store.db import aware
from fragments.store.models import AuthSession, EmailToken, EmailTokenPurpose, User

# Sending limits. They are silent (the route answers the same 202), so they never tell whether
# an address has an account: at most one link per address and purpose a minute, a few an hour,
# and a cap on the links one peer address may have sent in an hour.
COOLDOWN = timedelta(seconds=60)
PER_ADDRESS_PER_HOUR = 5
PER_REQUESTER_PER_HOUR = 20


class ResetDisabled(FragmentsError):
    status_code = 404
    code = "password_reset_disabled"

    def __init__(self) -> None:
        super().__init__(
            "Password reset is not set up on this server; ask its operator.",
        )


class ConfirmationDisabled(FragmentsError):
    status_code = 404
    code = "email_confirmation_disabled"

    def __init__(self) -> None:
        super().__init__("This server does not ask new accounts to confirm their address.")


class InvalidLink(BadRequest):
    code = "invalid_token"


def _lifetime(settings: Settings, purpose: EmailTokenPurpose) -> timedelta:
    if purpose == "password_reset":
        return timedelta(minutes=settings.password_reset_minutes)
    return timedelta(hours=settings.email_confirmation_hours)


async def _may_send(
    session: AsyncSession, email: str, purpose: EmailTokenPurpose, requested_by: str | None
) -> bool:
    now = datetime.now(UTC)
    recent = await session.execute(
        select(func.count(), func.max(EmailToken.created_at)).where(
            EmailToken.email == email,
            EmailToken.purpose == purpose,
            EmailToken.created_at > now - timedelta(hours=1),
        )
    )
    count, last = recent.one()
    if count >= PER_ADDRESS_PER_HOUR or (last is not None and aware(last) > now - COOLDOWN):
        return False
    if requested_by is None:
        return True
    by_peer = await session.execute(
        select(func.count()).where(
            EmailToken.requested_by == requested_by,
            EmailToken.created_at > now - timedelta(hours=1),
        )
    )
    return by_peer.scalar_one() < PER_REQUESTER_PER_HOUR


async def _issue(
    session: AsyncSession,
    settings: Settings,
    user: User,
    purpose: EmailTokenPurpose,
    requested_by: str | None,
) -> str | None:
    """A new link's token for the user's current address, or None when a limit holds."""
    assert user.email is not None
    if not await _may_send(session, user.email, purpose, requested_by):
        return None
    token = new_opaque_token()
    session.add(
        EmailToken(
            user_id=user.id,
            purpose=purpose,
            email=user.email,
            token_hash=digest(token),
            requested_by=requested_by[:64] if requested_by else None,
            expires_at=datetime.now(UTC) + _lifetime(settings, purpose),
        )
    )
    await session.flush()
    return token


def reset_mail(settings: Settings, email: str, token: str) -> Mail:
    link = f"{settings.resolved_public_url}/#reset={token}"
    minutes = settings.password_reset_minutes
    return Mail(
        to=email,
        subject="Reset your Fragments password",
        text=(
            "Someone (hopefully you) asked to reset the password of this Fragments account.\n\n"
            f"Choose a new password here (the link works once, for {minutes} minutes):\n"
            f"{link}\n\n"
            "If you did not ask, ignore this mail: your password stays as it is.\n"
        ),
    )


def confirmation_mail(settings: Settings, email: str, token: str) -> Mail:
    link = f"{settings.resolved_public_url}/#confirm={token}"
    hours = settings.email_confirmation_hours
    return Mail(
        to=email,
        subject="Confirm your Fragments address",
        text=(
            "Welcome to Fragments. Confirm this address to start using your account\n"
            f"(the link works once, for {hours} hours):\n"
            f"{link}\n\n"
            "If you did not sign up, ignore this mail.\n"
        ),
    )


async def _account(session: AsyncSession, email: str) -> User | None:
    """The account with a password at this address (guests and SSO-only users have none)."""
    try:
        address = service.normalise_email(email)
    except BadRequest:
        return None
    rows = await session.execute(select(User).where(User.email == address))
    user = rows.scalar_one_or_none()
    if user is None or user.is_guest or user.password_hash is None:
        return None
    return user


async def request_reset(
    session: AsyncSession, settings: Settings, email: str, requested_by: str | None
) -> Mail | None:
    """The reset mail to send, or None (no such account, or a sending limit holds)."""
    user = await _account(session, email)
    if user is None or user.email is None:
        return None
    token = await _issue(session, settings, user, "password_reset", requested_by)
    return reset_mail(settings, user.email, token) if token else None


async def request_confirmation(
    session: AsyncSession, settings: Settings, user: User, requested_by: str | None
) -> Mail | None:
    """The confirmation mail for an unconfirmed account, or None (confirmed, or limited)."""
    if user.email is None or user.email_confirmed_at is not None:
        return None
    token = await _issue(session, settings, user, "email_confirmation", requested_by)
    return confirmation_mail(settings, user.email, token) if token else None


async def resend_confirmation(
    session: AsyncSession, settings: Settings, email: str, requested_by: str | None
) -> Mail | None:
    user = await _account(session, email)
    return (
        None if user is None else await request_confirmation(session, settings, user, requested_by)
    )


async def signup_unconfirmed(
    session: AsyncSession,
    settings: Settings,
    email: str,
    password: str,
    *,
    guest_user_id: str | None,
    requested_by: str | None,
) -> tuple[User, Mail | None]:
    """Sign-up while addresses must be confirmed: the account, not signed in, and its mail."""
    user, _team_id = await service.create_account(
        session, email, password, guest_user_id=guest_user_id
    )
    return user, await request_confirmation(session, settings, user, requested_by)


async def _consume(session: AsyncSession, token: str, purpose: EmailTokenPurpose) -> User:
    """Spend a link: valid, unused, unexpired, for the account's current address. The UPDATE
    with `used_at IS NULL` makes two concurrent uses of one link succeed once."""
    invalid = InvalidLink(
        "This link is invalid, already used or expired; ask for a new one."
        if purpose == "password_reset"
        else "This confirmation link is invalid, already used or expired; ask for a new one."
    )
    rows = await session.execute(
        select(EmailToken).where(
            EmailToken.token_hash == digest(token.strip()), EmailToken.purpose == purpose
        )
    )
    row = rows.scalar_one_or_none()
    now = datetime.now(UTC)
    if row is None or row.used_at is not None or aware(row.expires_at) <= now:
        raise invalid
    user = await session.get(User, row.user_id)
    if user is None or user.email != row.email:
        raise invalid
    spent = await session.execute(
        update(EmailToken)
        .where(EmailToken.id == row.id, EmailToken.used_at.is_(None))
        .values(used_at=now)
    )
    if getattr(spent, "rowcount", 0) != 1:
        raise invalid
    # One success voids the user's other outstanding links of this kind.
    await session.execute(
        update(EmailToken)
        .where(
            EmailToken.user_id == user.id,
            EmailToken.purpose == purpose,
            EmailToken.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return user


async def reset_password(
    session: AsyncSession, settings: Settings, token: str, password: str
) -> service.TokenPair:
    """Set the new password, end every session of the user, and sign in afresh."""
    # Checked before the link is spent: a too-short password must not cost the link.
    if len(password) < service.MIN_PASSWORD:
        raise BadRequest(
            f"Choose a password of at least {service.MIN_PASSWORD} characters.",
            code="weak_password",
        )
    user = await _consume(session, token, "password_reset")
    now = datetime.now(UTC)
    user.password_hash = hash_password(password)
    # Following the mailed link proves the address too.
    if user.email_confirmed_at is None:
        user.email_confirmed_at = now
    # Whoever else holds a session (a stolen one included) is signed out: their refresh
    # tokens and access tokens stop working at once.
    await session.execute(
        update(AuthSession)
        .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.flush()
    team_id = await service.default_team_id(session, user.id)
    return await service.start_session(session, settings, user, team_id)


async def confirm_email(session: AsyncSession, settings: Settings, token: str) -> service.TokenPair:
    """Mark the address confirmed and sign the user in."""
    user = await _consume(session, token, "email_confirmation")
    if user.email_confirmed_at is None:
        user.email_confirmed_at = datetime.now(UTC)
    await session.flush()
    team_id = await service.default_team_id(session, user.id)
    return await service.start_session(session, settings, user, team_id)
