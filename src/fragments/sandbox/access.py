"""Who may run what in a sandbox: the owner of a conversation or a stored fragment, and
nobody else; and storing a run's result with its fragment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from fragments.errors import NotFound
from fragments.ports import DataFile
from fragments.principal import Principal
from fragments.schemas import Fragment
from fragments.store import repos, workspace
from fragments.store.db import Database
from fragments.store.errors import DB_DOWN, DatabaseUnavailable

log = structlog.get_logger(__name__)

_MISSING = "There is no such conversation."


@dataclass(frozen=True)
class RunAccess:
    """What a sandbox run may use: its sandbox's owner key and the stored fragment, if any."""

    owner: str | None
    fragment: Fragment | None
    fragment_id: str | None
    # The conversation's uploaded data files, for its sandbox's working folder.
    data_files: tuple[DataFile, ...] = ()


async def authorize_run(
    db: Database,
    who: Principal,
    *,
    conversation_id: str | None,
    fragment_id: str | None,
    need_fragment: bool,
    with_data: bool = False,
) -> RunAccess:
    """Only the owner runs a conversation or a stored fragment; anything else is 404."""
    # Sandboxes are keyed by caller too, so even an unverified id never reaches another's.
    prefix = who.user_id or "anonymous"
    if who.anonymous or (not conversation_id and not fragment_id):
        if fragment_id:
            # Stored fragments belong to accounts (or guest tokens); anonymous callers have none.
            raise NotFound("There is no such fragment.")
        owner = f"{prefix}:{conversation_id}" if conversation_id else None
        return RunAccess(owner, None, None)
    try:
        async with db.transaction(who.identity) as session:
            stored: Fragment | None = None
            if fragment_id:
                found = await repos.own_fragment(session, who.identity, fragment_id)
                if found is None or (conversation_id and found[1].id != conversation_id):
                    raise NotFound("There is no such fragment.")
                conversation_id = found[1].id
                stored = Fragment.model_validate(found[0].body)
            elif conversation_id and (
                await repos.own_conversation(session, who.identity, conversation_id) is None
            ):
                raise NotFound(_MISSING)
            data: tuple[DataFile, ...] = ()
            if with_data and conversation_id:
                rows = await workspace.files(session, conversation_id, with_content=True)
                data = tuple((f.name, f.content) for f in rows)
    except DB_DOWN as exc:
        if fragment_id and need_fragment:
            raise DatabaseUnavailable() from exc
        owner = f"{prefix}:{conversation_id}" if conversation_id else None
        return RunAccess(owner, None, None)
    return RunAccess(f"{prefix}:{conversation_id}", stored, fragment_id, data)


async def save_run(db: Database, who: Principal, access: RunAccess, result: dict[str, Any]) -> bool:
    """Store a run's result with its fragment; False when it could not be stored."""
    if access.fragment_id is None:
        return False
    try:
        async with db.transaction(who.identity) as session:
            sandbox_id = result.get("sandbox_id")
            await repos.save_execution(
                session, access.fragment_id, result, sandbox_id if sandbox_id else None
            )
        return True
    except (*DB_DOWN, SQLAlchemyError):
        log.warning("sandbox_result_not_saved", fragment_id=access.fragment_id, exc_info=True)
        return False
