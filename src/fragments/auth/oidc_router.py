"""/api/auth/oidc/*: single sign-on with an OpenID Connect provider.

These routes create the principal, so none of them depends on one (no `SessionDep`): they work
with guests off. The tokens never travel in a URL the server sees: the callback sends the page to
`/#sso=<one-time code>` (a fragment stays in the browser) and the page exchanges the code.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from fragments.auth import oidc, oidc_accounts
from fragments.auth.deps import unit_of_work
from fragments.auth.public import TokenPairPublic
from fragments.state import SettingsDep
from fragments.store.errors import DatabaseUnavailable

router = APIRouter(prefix="/api/auth/oidc", tags=["auth"])
log = structlog.get_logger(__name__)


class ExchangeBody(BaseModel):
    code: str = Field(max_length=128)


def _to_page(fragment: str) -> RedirectResponse:
    response = RedirectResponse("/#" + fragment, status_code=302)
    # The flow is over either way: its cookie must not be replayed.
    response.delete_cookie(oidc.FLOW_COOKIE, path=oidc.FLOW_COOKIE_PATH)
    return response


def _failed(failure: oidc.SsoFailure) -> RedirectResponse:
    log.warning("oidc_sign_in_failed", reason=failure.code, why=str(failure))
    return _to_page(f"sso_error={failure.code}")


@router.get("/login", status_code=302, response_class=RedirectResponse)
async def login(settings: SettingsDep) -> RedirectResponse:
    """Send the browser to the provider's sign-in page."""
    config = oidc.config_from(settings)
    try:
        url, flow = await oidc.begin(config)
    except oidc.SsoFailure as failure:
        return _failed(failure)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        oidc.FLOW_COOKIE,
        oidc.seal_flow(flow, settings.secret_key.get_secret_value()),
        max_age=oidc.FLOW_SECONDS,
        path=oidc.FLOW_COOKIE_PATH,
        httponly=True,
        secure=config.secure_cookie,
        # Lax: the provider's redirect back is a top-level GET, which Lax cookies accompany.
        samesite="lax",
    )
    return response


@router.get("/callback", status_code=302, response_class=RedirectResponse)
async def callback(
    request: Request,
    settings: SettingsDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
    iss: str | None = None,
) -> RedirectResponse:
    """The provider's answer: check it, sign the person in, hand the page a one-time code."""
    config = oidc.config_from(settings)
    try:
        # The state is checked first: an answer this browser did not ask for is refused,
        # whatever it says.
        flow = oidc.open_flow(
            request.cookies.get(oidc.FLOW_COOKIE), state, settings.secret_key.get_secret_value()
        )
        if error is not None:
            reason: oidc.SsoErrorCode = (
                "cancelled" if error == "access_denied" else "provider_error"
            )
            raise oidc.SsoFailure(reason, f"the provider answered {error}")
        if not code:
            raise oidc.SsoFailure("provider_error", "the provider sent no code")
        identity = await oidc.complete(config, code, flow, iss)
        try:
            async with unit_of_work(request) as session:
                one_time = await oidc_accounts.sign_in(session, settings, config.issuer, identity)
        except DatabaseUnavailable as exc:
            raise oidc.SsoFailure("server_unavailable", "the database is unreachable") from exc
    except oidc.SsoFailure as failure:
        return _failed(failure)
    return _to_page(f"sso={one_time}")


@router.post("/exchange")
async def exchange(request: Request, body: ExchangeBody, settings: SettingsDep) -> TokenPairPublic:
    """The token pair for the page's one-time code (single use, valid for a minute)."""
    oidc.config_from(settings)
    async with unit_of_work(request) as session:
        pair = await oidc_accounts.exchange(session, settings, body.code)
    return TokenPairPublic.of(pair)
