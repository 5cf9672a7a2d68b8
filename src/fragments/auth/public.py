"""The JSON bodies the account routes answer with (`/api/auth`, `/api/teams`, `/api/keys`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from fragments.auth.service import TokenPair


class TokenPairPublic(BaseModel):
    """A signed-in session: a short-lived access token and the refresh token that renews it."""

    access_token: str
    refresh_token: str
    token_type: str

    @classmethod
    def of(cls, pair: TokenPair) -> TokenPairPublic:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=pair.token_type,
        )


class ConfirmationPublic(BaseModel):
    """A sign-up that waits for its address to be confirmed: no tokens yet."""

    confirmation_required: Literal[True]
    email: str


class AcceptedPublic(BaseModel):
    """The same answer whether or not the address has an account (nothing to probe)."""

    status: Literal["accepted"]
    detail: str


class MyTeamPublic(BaseModel):
    """A team of the caller's, as `GET /api/auth/me` lists it."""

    id: str
    name: str
    tier: str
    role: str
    default: bool


class MePublic(BaseModel):
    id: str
    email: str | None
    guest: bool
    # The team the token acts for.
    team_id: str | None
    teams: list[MyTeamPublic]


class ApiTokenPublic(BaseModel):
    """A new API token: shown this once."""

    id: str
    name: str
    token: str


class TeamPublic(BaseModel):
    id: str
    name: str
    tier: str
    limits: dict[str, int] | None
    # The caller's role in the team.
    role: str


class MemberPublic(BaseModel):
    user_id: str
    email: str | None
    role: str


class RolePublic(BaseModel):
    """A member's role after a change."""

    user_id: str
    role: str


class SavedKeyPublic(BaseModel):
    """A saved provider key: never the key itself, only its last characters."""

    provider: str
    hint: str
    created_at: str
