"""POST /api/publish: keep a web app's sandbox alive (at most 24 h) behind a short link;
GET /s/<id> redirects to the preview, or says clearly that the link has expired."""

from __future__ import annotations

import html
import re
import secrets
from datetime import UTC, datetime, timedelta

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import AliasChoices, BaseModel, Field, field_validator
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.auth.deps import SessionDep, SignedInUser
from fragments.errors import BadRequest, NotFound
from fragments.redis_client import SharedRedis
from fragments.state import StateDep, get_db
from fragments.store.db import aware
from fragments.store.models import Conversation, ExecutionResultRow, FragmentRow, ShortLink

router = APIRouter(tags=["publish"])
log = structlog.get_logger(__name__)

# With Redis configured, links live there with their expiry; a longer-lived marker remembers that
# a link existed, so an expired one still gets the "expired" page rather than "not found".
_LINK = "fragments:link:"
_SEEN = "fragments:link-seen:"
_SEEN_SECONDS = 30 * 86400


def _redis(shared: SharedRedis | None) -> Redis | None:
    """The app's Redis client, or None without Redis or while it is down (links go to the
    database then)."""
    return shared.available() if shared is not None else None


MAX_SECONDS = 24 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PublishRequest(BaseModel):
    sandbox_id: str = Field(
        max_length=100, validation_alias=AliasChoices("sandbox_id", "sbxId", "sandboxId")
    )
    # Seconds, or the original client's strings: "30m", "1h", "3h", "6h", "1d".
    duration: int | str = 3600

    @field_validator("duration")
    @classmethod
    def _seconds(cls, value: int | str) -> int:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
            if not match:
                raise ValueError("use seconds or a duration such as 30m, 1h or 1d")
            value = int(match.group(1)) * _UNITS[match.group(2) or "s"]
        if not 60 <= value <= MAX_SECONDS:
            raise ValueError("a link lives between 1 minute and 24 hours")
        return value


class PublishPublic(BaseModel):
    """A short link to a running preview, valid until `expires_at`."""

    id: str
    url: str
    expires_at: str


@router.post("/api/publish", status_code=201)
async def publish(
    request: Request, body: PublishRequest, user: SignedInUser, session: SessionDep, state: StateDep
) -> PublishPublic:
    """Only the owner of the conversation that ran the sandbox publishes it."""
    assert user.user_id is not None
    url = await _preview_url(session, user.user_id, body.sandbox_id)
    granted = await state.sandboxes.extend(body.sandbox_id, int(body.duration))
    if granted is None:
        raise NotFound("The sandbox is no longer running; run the fragment again to publish it.")
    link_id, expires = await _store_link(
        session, state.redis, url, user.user_id, body.sandbox_id, granted
    )
    short = str(request.base_url).rstrip("/") + f"/s/{link_id}"
    state.analytics.capture(
        "published", user.user_id, user.team_id, link_id=link_id, seconds=round(granted)
    )
    return PublishPublic(id=link_id, url=short, expires_at=expires.isoformat())


async def _preview_url(session: AsyncSession, user_id: str, sandbox_id: str) -> str:
    """The preview URL of a web app the caller's conversation ran in this sandbox."""
    rows = await session.execute(
        select(ExecutionResultRow.result)
        .join(FragmentRow, FragmentRow.id == ExecutionResultRow.fragment_id)
        .join(Conversation, Conversation.id == FragmentRow.conversation_id)
        .where(
            ExecutionResultRow.sandbox_id == sandbox_id,
            Conversation.user_id == user_id,
        )
        .order_by(ExecutionResultRow.created_at.desc())
        .limit(1)
    )
    result = rows.scalar_one_or_none()
    if result is None:
        raise NotFound("There is no such sandbox.")
    url = result.get("url")
    if not isinstance(url, str) or not url:
        raise BadRequest("Only a web app's preview can be published.", code="not_a_web_app")
    return url


async def _store_link(
    session: AsyncSession,
    shared: SharedRedis | None,
    url: str,
    user_id: str,
    sandbox_id: str,
    granted: float,
) -> tuple[str, datetime]:
    """A new short link to `url` for `granted` seconds (Redis, else the database): its id
    and expiry."""
    expires = datetime.now(UTC) + timedelta(seconds=granted)
    link_id = secrets.token_urlsafe(6)
    stored = False
    redis = _redis(shared)
    if redis is not None and shared is not None:
        try:
            await redis.set(_LINK + link_id, url, ex=max(1, int(granted)))
            await redis.set(_SEEN + link_id, "1", ex=_SEEN_SECONDS)
            stored = True
        except RedisError as exc:
            shared.outage.failed("publish_redis_down", exc)
    if not stored:
        session.add(
            ShortLink(
                id=link_id, url=url, user_id=user_id, sandbox_id=sandbox_id, expires_at=expires
            )
        )
        await session.flush()
    return link_id, expires


def _page(title: str, text: str, status: int, kind: str) -> HTMLResponse:
    """A small page in the app's style for a visitor (who may never have used the app)."""
    t, p = html.escape(title), html.escape(text)
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>{t} · Fragments</title><link rel=stylesheet href='/static/styles.css'>"
        "<link rel=icon href='/static/favicon.svg' type='image/svg+xml'></head>"
        f"<body><main class=notice-page data-testid='link-{kind}'>"
        f"<h1>{t}</h1><p>{p}</p>"
        "<p><a class='btn btn-primary' href='/'>Make your own app with Fragments</a></p>"
        "</main></body></html>"
    )
    return HTMLResponse(body, status_code=status)


_EXPIRED = (
    "This link has expired",
    "The app published here was only kept online for a while, and that time is over. "
    "Ask whoever shared it to publish it again.",
    410,
    "expired",
)


@router.get("/s/{link_id}", include_in_schema=False)
async def follow(link_id: str, request: Request, state: StateDep) -> Response:
    link_id = link_id[:32]
    redis = _redis(state.redis)
    if redis is not None and state.redis is not None:
        try:
            url, seen = await redis.mget(_LINK + link_id, _SEEN + link_id)
            if url is not None:
                return RedirectResponse(str(url), status_code=307)
            if seen is not None:
                return _page(*_EXPIRED)
        except RedisError as exc:
            state.redis.outage.failed("short_link_redis_down", exc)
    async with get_db(request).transaction() as session:
        link = await session.get(ShortLink, link_id)
    if link is None:
        return _page(
            "Link not found", "There is no published app at this address.", 404, "not-found"
        )
    if aware(link.expires_at) <= datetime.now(UTC):
        return _page(*_EXPIRED)
    return RedirectResponse(link.url, status_code=307)
