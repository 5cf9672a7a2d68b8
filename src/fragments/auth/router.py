"""/api/auth/*: sign-up, sign-in, refresh, sign-out, guests, team switching, API tokens."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import BaseModel, Field

from fragments.auth import recovery, service
from fragments.auth.deps import (
    CurrentUser,
    SessionDep,
    SignedInUser,
    unit_of_work,
)
from fragments.auth.mail import send_after_response
from fragments.auth.public import (
    ApiTokenPublic,
    ConfirmationPublic,
    MePublic,
    MyTeamPublic,
    TokenPairPublic,
)
from fragments.auth.tokens import Forbidden, Unauthorized, decode_access_token
from fragments.http_client_ip import client_ip
from fragments.quota.limits import enforce_guest_mint
from fragments.state import SettingsDep, get_state
from fragments.store.models import ApiToken

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Credentials(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    # The guest access token whose work this account claims (the Authorization header works too).
    guest_token: str | None = None


class SsoOption(BaseModel):
    """The single sign-on button: its label and where it starts."""

    name: str
    login_url: str


class AuthOptions(BaseModel):
    """What the sign-in page may offer; later features add their switches here."""

    guests: bool
    # "Forgot password?" works (FRAGMENTS_SMTP_URL is set).
    password_reset: bool
    # New accounts confirm their address before they can sign in.
    email_confirmation: bool
    sso: SsoOption | None = None


class RefreshBody(BaseModel):
    refresh_token: str = Field(max_length=512)


class SwitchTeam(BaseModel):
    team_id: str = Field(max_length=64)


class NewApiToken(BaseModel):
    name: str = Field("script", max_length=200)


def _guest_id(request: Request, body: Credentials, secret: str) -> str | None:
    """The guest to claim: a valid guest access token in the body or the header."""
    header = request.headers.get("authorization", "")
    candidates = [body.guest_token, header[7:] if header.lower().startswith("bearer ") else None]
    for token in candidates:
        if not token:
            continue
        try:
            claims = decode_access_token(token.strip(), secret)
        except Unauthorized:
            continue
        if claims.guest:
            return claims.user_id
    return None


# Sign-up and sign-in create the principal, so they must not depend on one: they open their
# own unit of work instead of `SessionDep` (which refuses callers without a token when guests
# are off).


@router.get("/options")
async def options(settings: SettingsDep) -> AuthOptions:
    """What the sign-in page may offer on this server (public, no secrets)."""
    sso = None
    if settings.oidc_issuer and settings.oidc_client_id:
        sso = SsoOption(name=settings.oidc_name, login_url="/api/auth/oidc/login")
    return AuthOptions(
        guests=settings.guests_allowed,
        password_reset=settings.smtp_url is not None,
        email_confirmation=settings.require_email_confirmation,
        sso=sso,
    )


@router.post("/signup", status_code=201)
async def signup(
    request: Request, body: Credentials, settings: SettingsDep, background: BackgroundTasks
) -> TokenPairPublic | ConfirmationPublic:
    """Create an account (claiming the guest's work when a guest token comes along). While
    addresses must be confirmed, no tokens: `{confirmation_required: true, email}` and a mail."""
    guest_id = _guest_id(request, body, settings.secret_key.get_secret_value())
    if settings.require_email_confirmation:
        async with unit_of_work(request) as session:
            user, mail = await recovery.signup_unconfirmed(
                session,
                settings,
                body.email,
                body.password,
                guest_user_id=guest_id,
                requested_by=client_ip(request, settings.trusted_proxies),
            )
        send_after_response(background, settings, mail)
        _signed_up(request, user.id, guest_id)
        return ConfirmationPublic(confirmation_required=True, email=user.email or "")
    async with unit_of_work(request) as session:
        pair = await service.signup(
            session, settings, body.email, body.password, guest_user_id=guest_id
        )
    _signed_up(request, pair.user_id, guest_id)
    return TokenPairPublic.of(pair)


def _signed_up(request: Request, user_id: str | None, guest_id: str | None) -> None:
    get_state(request).analytics.capture(
        "signed up", user_id, None, method="password", from_guest=guest_id is not None
    )


@router.post("/login")
async def login(request: Request, body: Credentials, settings: SettingsDep) -> TokenPairPublic:
    async with unit_of_work(request) as session:
        return TokenPairPublic.of(await service.login(session, settings, body.email, body.password))


@router.post("/guest", status_code=201)
async def guest(request: Request, response: Response, settings: SettingsDep) -> TokenPairPublic:
    """A guest account the browser keeps; its work is claimed when it signs up. Limited per
    client IP: guests are counted by IP, so a new token must not come for free."""
    if not settings.guests_allowed:
        raise Forbidden("Guest sessions are disabled here; sign up instead.", code="no_guests")
    if settings.rate_limits:
        response.headers.update(
            await enforce_guest_mint(request, settings, get_state(request).limiter)
        )
    async with unit_of_work(request) as session:
        return TokenPairPublic.of(await service.guest(session, settings))


@router.post("/refresh")
async def refresh(request: Request, body: RefreshBody, settings: SettingsDep) -> TokenPairPublic:
    async with unit_of_work(request) as session:
        return TokenPairPublic.of(await service.refresh(session, settings, body.refresh_token))


@router.post("/logout", status_code=204)
async def logout(request: Request, user: CurrentUser, body: RefreshBody | None = None) -> None:
    """End the session: its refresh token and its access tokens stop working."""
    async with unit_of_work(request) as session:
        if user.session_id:
            await service.logout(session, user.session_id)
        if body is not None:
            await service.logout_refresh(session, body.refresh_token)


@router.get("/me")
async def me(user: SignedInUser, session: SessionDep) -> MePublic:
    """The caller, the team the token acts for, and every team they belong to."""
    assert user.user_id is not None
    row, teams = await service.me(session, user.user_id)
    return MePublic(
        id=row.id,
        email=row.email,
        guest=row.is_guest,
        team_id=user.team_id,
        teams=[
            MyTeamPublic(id=t.id, name=t.name, tier=t.tier, role=m.role, default=m.is_default)
            for t, m in teams
        ],
    )


@router.post("/switch-team")
async def switch_team(
    body: SwitchTeam, user: SignedInUser, session: SessionDep, settings: SettingsDep
) -> TokenPairPublic:
    assert user.user_id is not None
    pair = await service.switch_team(session, settings, user.user_id, user.session_id, body.team_id)
    return TokenPairPublic.of(pair)


@router.post("/tokens", status_code=201)
async def create_token(
    body: NewApiToken, user: SignedInUser, session: SessionDep
) -> ApiTokenPublic:
    """A personal API token for scripts; shown once."""
    if user.is_guest:
        raise Forbidden("Guests cannot create API tokens; sign up first.", code="guest")
    assert user.user_id is not None
    assert user.team_id is not None
    row, token = await service.create_api_token(session, user.user_id, user.team_id, body.name)
    return ApiTokenPublic(id=row.id, name=row.name, token=token)


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: str, user: SignedInUser, session: SessionDep) -> None:
    from datetime import UTC, datetime

    row = await session.get(ApiToken, token_id)
    if row is None or row.user_id != user.user_id:
        from fragments.errors import NotFound

        raise NotFound("There is no such API token.")
    row.revoked_at = datetime.now(UTC)
