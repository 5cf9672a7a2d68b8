"""/api/conversations/{id}/files: data files uploaded into a conversation (CSV, TSV, JSON, text,
Excel, Parquet). The body is the file's bytes (`?name=` names it); a file is stored with the
conversation, written into its sandbox's working folder before each run, and described to the
model (name, size, first lines) on every chat turn."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from fragments.auth.deps import SessionDep, SignedInUser
from fragments.conversations.data_files import FileNote, check_file
from fragments.errors import BadRequest, NotFound, PayloadTooLarge
from fragments.principal import Principal
from fragments.state import SettingsDep
from fragments.store import repos, workspace
from fragments.store.db import Database, aware
from fragments.store.errors import DB_DOWN
from fragments.store.models import WorkspaceFile, utcnow

router = APIRouter(prefix="/api/conversations", tags=["files"])

_MISSING = "There is no such conversation."


class DataFilePublic(BaseModel):
    name: str
    size: int
    kind: str
    media_type: str
    # The first lines of a text file, or how to read a binary one (what the model is told).
    preview: str
    created_at: str

    @classmethod
    def of(cls, row: WorkspaceFile) -> DataFilePublic:
        return cls(
            name=row.name,
            size=row.size,
            kind=row.kind,
            media_type=row.media_type,
            preview=row.preview,
            created_at=aware(row.created_at).isoformat(),
        )


class DataFilesPublic(BaseModel):
    items: list[DataFilePublic]
    max_files: int
    max_bytes: int


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` (never buffered beyond it)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"A data file may be at most {limit / (1024 * 1024):g} MB.", code="file_too_large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.get("/{conversation_id}/files")
async def list_files(
    conversation_id: str, user: SignedInUser, session: SessionDep, settings: SettingsDep
) -> DataFilesPublic:
    row = await repos.visible_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    rows = await workspace.files(session, row.id)
    return DataFilesPublic(
        items=[DataFilePublic.of(f) for f in rows],
        max_files=settings.upload_max_files,
        max_bytes=settings.upload_max_bytes,
    )


@router.post("/{conversation_id}/files", status_code=201)
async def upload_file(
    conversation_id: str,
    request: Request,
    user: SignedInUser,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str, Query(max_length=255)] = "",
) -> DataFilePublic:
    """Store a data file (the body's bytes) under a sanitised `name`; the same name replaces
    the file. Refused whole (nothing stored) when too large, of another type, or one too many."""
    row = await repos.own_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    if not name:
        raise BadRequest("Name the file (?name=data.csv).", code="invalid_name")
    data = await _read_body(request, settings.upload_max_bytes)
    checked = check_file(name, data)
    existing = await workspace.file_named(session, row.id, checked.name)
    if existing is None:
        if await workspace.count_files(session, row.id) >= settings.upload_max_files:
            raise BadRequest(
                f"A conversation keeps at most {settings.upload_max_files} data files; "
                "delete one first.",
                code="too_many_files",
            )
        existing = WorkspaceFile(conversation_id=row.id, name=checked.name)
        session.add(existing)
    existing.size = len(data)
    existing.kind = checked.kind
    existing.media_type = checked.media_type
    existing.content = data
    existing.preview = checked.preview
    existing.created_at = utcnow()
    row.updated_at = utcnow()
    await session.flush()
    return DataFilePublic.of(existing)


@router.delete("/{conversation_id}/files/{name}", status_code=204)
async def delete_file(
    conversation_id: str, name: str, user: SignedInUser, session: SessionDep
) -> None:
    row = await repos.own_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound(_MISSING)
    if not await workspace.delete_file(session, row.id, name[:255]):
        raise NotFound("There is no such file in this conversation.")


async def file_notes(db: Database, who: Principal, conversation_id: str) -> list[FileNote]:
    """What the model is told about the conversation's data files; [] when there are none or
    the database cannot say (the chat goes on without them)."""
    if who.anonymous:
        return []
    try:
        async with db.transaction(who.identity) as session:
            row = await repos.own_conversation(session, who.identity, conversation_id)
            if row is None:
                return []
            rows = await workspace.files(session, row.id)
            return [FileNote(f.name, f.size, f.kind, f.preview) for f in rows]
    except DB_DOWN:
        return []
