"""Who is calling: `CurrentUser` (possibly an anonymous guest), `SignedInUser`, `SessionDep`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.auth.tokens import (
    API_TOKEN_PREFIX,
    Unauthorized,
    decode_access_token,
    decode_supabase_token,
    digest,
)
from fragments.observability.context import note_caller
from fragments.principal import ANONYMOUS, Principal
from fragments.state import State, get_db, get_state
from fragments.store.db import Database
from fragments.store.errors import DB_DOWN, DatabaseUnavailable
from fragments.store.models import ApiToken, AuthSession, Membership, Team, User

log = structlog.get_logger(__name__)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send the token as 'Authorization: Bearer <token>'.", "invalid_token")
    return token.strip()


async def _api_token(db: Database, token: str) -> Principal:
    async with db.transaction() as session:
        rows = await session.execute(
            select(ApiToken).where(
                ApiToken.token_hash == digest(token), ApiToken.revoked_at.is_(None)
            )
        )
        row = rows.scalar_one_or_none()
        if row is None or await session.get(User, row.user_id) is None:
            raise Unauthorized("The API token is not valid.", "invalid_token")
        return Principal(row.user_id, row.team_id, None, is_guest=False)


async def _supabase(db: Database, token: str, secret: str) -> Principal:
    """Supabase users are mapped to local users (created on first sight) by their `sub`."""
    sub, email = decode_supabase_token(token, secret)
    async with db.transaction() as session:
        user = (
            await session.execute(select(User).where(User.external_id == sub))
        ).scalar_one_or_none()
        if user is None:
            taken = (
                email
                and (
                    await session.execute(select(User.id).where(User.email == email))
                ).scalar_one_or_none()
            )
            user = User(external_id=sub, email=None if taken else email, is_guest=False)
            session.add(user)
            await session.flush()
            team = Team(name=(email or "Personal").split("@")[0], personal=True, limits={})
            session.add(team)
            await session.flush()
            session.add(Membership(user_id=user.id, team_id=team.id, role="owner", is_default=True))
            await session.flush()
            team_id = team.id
        else:
            from fragments.auth.service import default_team_id

            team_id = await default_team_id(session, user.id)
        return Principal(user.id, team_id, None, is_guest=False)


async def resolve_principal(request: Request) -> Principal:
    """Verify the bearer token on every request: signature, expiry, and (when the database
    answers) that the user and the session still exist."""
    principal = await _resolve(request)
    # Every log line of the request names the caller from here on.
    note_caller(principal.user_id, principal.team_id)
    return principal


async def _resolve(request: Request) -> Principal:
    return await principal_for_token(get_state(request), _bearer(request))


async def principal_for_token(state: State, token: str | None) -> Principal:
    """The caller a token names, checked as for every request (a WebSocket's token arrives in
    its first message, not in a header: `/api/ws`). No token: anonymous, if guests are allowed."""
    settings = state.settings
    if token is None:
        if settings.guests_allowed:
            return ANONYMOUS
        raise Unauthorized("Sign in to continue.", "unauthorized")
    db = state.db
    if token.startswith(API_TOKEN_PREFIX):
        try:
            return await _api_token(db, token)
        except DB_DOWN as exc:
            raise DatabaseUnavailable() from exc
    try:
        claims = decode_access_token(token, settings.secret_key.get_secret_value())
    except Unauthorized as exc:
        supabase = settings.supabase_jwt_secret
        if supabase is None or exc.code == "token_expired":
            raise
        try:
            return await _supabase(db, token, supabase.get_secret_value())
        except DB_DOWN as down:
            raise DatabaseUnavailable() from down
    try:
        async with db.transaction() as session:
            rows = await session.execute(
                select(AuthSession.revoked_at, AuthSession.expires_at)
                .join(User, User.id == AuthSession.user_id)
                # Still a member of the team the token acts for (removal takes effect at once).
                .join(
                    Membership,
                    (Membership.user_id == User.id) & (Membership.team_id == claims.team_id),
                )
                .where(AuthSession.id == claims.session_id, User.id == claims.user_id)
            )
            found = rows.first()
    except DB_DOWN:
        log.warning("auth_offline", user_id=claims.user_id)
        return Principal(
            claims.user_id, claims.team_id, claims.session_id, claims.guest, offline=True
        )
    if found is None or found.revoked_at is not None:
        raise Unauthorized("The session has ended; sign in again.", "invalid_token")
    expires = found.expires_at
    if (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= datetime.now(UTC):
        raise Unauthorized("The session has ended; sign in again.", "invalid_token")
    return Principal(claims.user_id, claims.team_id, claims.session_id, claims.guest)


async def signed_in(principal: Annotated[Principal, Depends(resolve_principal)]) -> Principal:
    """A caller with an account or a guest token (anonymous callers are refused)."""
    if principal.anonymous:
        raise Unauthorized("Sign in or start a guest session first.", "unauthorized")
    return principal


CurrentUser = Annotated[Principal, Depends(resolve_principal)]
SignedInUser = Annotated[Principal, Depends(signed_in)]


@asynccontextmanager
async def unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """A unit of work acting as nobody yet: for the routes that create or recover a principal
    (sign-up, sign-in, refresh), which must work without a token even when guests are off."""
    try:
        async with get_db(request).transaction() as session:
            yield session
    except DB_DOWN as exc:
        raise DatabaseUnavailable() from exc


async def request_session(
    request: Request, principal: Annotated[Principal, Depends(resolve_principal)]
) -> AsyncIterator[AsyncSession]:
    """The request's unit of work, acting as the caller (RLS identity on PostgreSQL)."""
    db = get_db(request)
    try:
        async with db.transaction(principal.identity) as session:
            yield session
    except DB_DOWN as exc:
        raise DatabaseUnavailable() from exc


SessionDep = Annotated[AsyncSession, Depends(request_session, scope="function")]
