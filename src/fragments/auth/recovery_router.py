"""/api/auth/password-reset and /api/auth/confirm-email: mailed single-use links.

These routes recover or create a sign-in, so they depend on no principal: each opens its own
unit of work and works with guests off."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import BaseModel, Field

from fragments.auth import recovery
from fragments.auth.deps import unit_of_work
from fragments.auth.mail import send_after_response
from fragments.auth.public import AcceptedPublic, TokenPairPublic
from fragments.http_client_ip import client_ip
from fragments.state import SettingsDep, get_state

router = APIRouter(prefix="/api/auth", tags=["auth"])

# One answer whether or not the address has an account (no account enumeration).
RESET_ACCEPTED = AcceptedPublic(
    status="accepted",
    detail="If an account uses this address, we sent it a link to choose a new password.",
)
RESEND_ACCEPTED = AcceptedPublic(
    status="accepted",
    detail="If this address awaits confirmation, we sent it a new link.",
)


class EmailBody(BaseModel):
    email: str = Field(max_length=320)


class ResetBody(BaseModel):
    token: str = Field(max_length=512)
    password: str = Field(max_length=1024)


class ConfirmBody(BaseModel):
    token: str = Field(max_length=512)


def _peer(request: Request) -> str | None:
    """The client's address as the per-IP limits see it (behind trusted proxies too)."""
    return client_ip(request, get_state(request).settings.trusted_proxies)


@router.post("/password-reset", status_code=202)
async def password_reset(
    request: Request, body: EmailBody, settings: SettingsDep, background: BackgroundTasks
) -> AcceptedPublic:
    """Mail a reset link to the address if it has an account; the answer is the same anyway."""
    if settings.smtp_url is None:
        raise recovery.ResetDisabled()
    async with unit_of_work(request) as session:
        mail = await recovery.request_reset(session, settings, body.email, _peer(request))
    send_after_response(background, settings, mail)
    return RESET_ACCEPTED


@router.post("/password-reset/confirm")
async def password_reset_confirm(
    request: Request, body: ResetBody, settings: SettingsDep
) -> TokenPairPublic:
    """Set a new password from a reset link: every other session ends; the caller is signed in."""
    if settings.smtp_url is None:
        raise recovery.ResetDisabled()
    async with unit_of_work(request) as session:
        return TokenPairPublic.of(
            await recovery.reset_password(session, settings, body.token, body.password)
        )


@router.post("/confirm-email")
async def confirm_email(
    request: Request, body: ConfirmBody, settings: SettingsDep
) -> TokenPairPublic:
    """Confirm the address a link was sent to and sign its account in."""
    async with unit_of_work(request) as session:
        return TokenPairPublic.of(await recovery.confirm_email(session, settings, body.token))


@router.post("/confirm-email/resend", status_code=202)
async def confirm_email_resend(
    request: Request, body: EmailBody, settings: SettingsDep, background: BackgroundTasks
) -> AcceptedPublic:
    """Mail a new confirmation link if the address awaits one; the answer is the same anyway."""
    if not settings.require_email_confirmation:
        raise recovery.ConfirmationDisabled()
    async with unit_of_work(request) as session:
        mail = await recovery.resend_confirmation(session, settings, body.email, _peer(request))
    send_after_response(background, settings, mail)
    return RESEND_ACCEPTED
