"""/api/keys: provider API keys a user saves for their chats, encrypted at rest and never
returned in plaintext."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.auth.deps import SessionDep, SignedInUser
from fragments.auth.public import SavedKeyPublic
from fragments.auth.secrets import decrypt, encrypt, hint
from fragments.config import Settings
from fragments.errors import BadRequest, NotFound
from fragments.llm.providers import find_provider
from fragments.state import SettingsDep
from fragments.store.db import aware
from fragments.store.models import ProviderKey

router = APIRouter(prefix="/api/keys", tags=["keys"])


class SaveKey(BaseModel):
    api_key: str = Field(min_length=1, max_length=1000)


def _check_provider(provider: str) -> None:
    if find_provider(provider) is None:
        raise BadRequest(f"Unknown provider '{provider[:40]}'.", code="unknown_provider")


def _public(row: ProviderKey) -> SavedKeyPublic:
    return SavedKeyPublic(
        provider=row.provider, hint=row.hint, created_at=aware(row.created_at).isoformat()
    )


async def _find(session: AsyncSession, user_id: str, provider: str) -> ProviderKey | None:
    rows = await session.execute(
        select(ProviderKey).where(ProviderKey.user_id == user_id, ProviderKey.provider == provider)
    )
    return rows.scalar_one_or_none()


async def saved_key(
    session: AsyncSession, settings: Settings, user_id: str, provider: str
) -> str | None:
    """The caller's saved key for a provider, decrypted, for their own chat request."""
    row = await _find(session, user_id, provider)
    return decrypt(settings, row.ciphertext) if row else None


@router.get("")
async def list_keys(user: SignedInUser, session: SessionDep) -> list[SavedKeyPublic]:
    rows = await session.execute(
        select(ProviderKey)
        .where(ProviderKey.user_id == user.user_id)
        .order_by(ProviderKey.provider)
    )
    return [_public(r) for r in rows.scalars()]


@router.put("/{provider}")
async def save_key(
    provider: str, body: SaveKey, user: SignedInUser, session: SessionDep, settings: SettingsDep
) -> SavedKeyPublic:
    _check_provider(provider)
    assert user.user_id is not None
    assert user.team_id is not None
    key = body.api_key.strip()
    row = await _find(session, user.user_id, provider)
    if row is None:
        row = ProviderKey(user_id=user.user_id, team_id=user.team_id, provider=provider)
        session.add(row)
    row.ciphertext = encrypt(settings, key)
    row.hint = hint(key)
    await session.flush()
    return _public(row)


@router.delete("/{provider}", status_code=204)
async def delete_key(provider: str, user: SignedInUser, session: SessionDep) -> None:
    _check_provider(provider)
    assert user.user_id is not None
    row = await _find(session, user.user_id, provider)
    if row is None:
        raise NotFound("No key is saved for this provider.")
    await session.delete(row)
