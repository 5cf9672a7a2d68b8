"""The workspace features' routers, registered together by the app: versions (undo,
restore, hand edits), data-file uploads and the ZIP download."""

from fastapi import APIRouter

from fragments.conversations.export import router as export_router
from fragments.conversations.hand_edits import router as hand_edits_router
from fragments.conversations.uploads import router as uploads_router
from fragments.conversations.versions import router as versions_router

workspace_routers: tuple[APIRouter, ...] = (
    versions_router,
    hand_edits_router,
    uploads_router,
    export_router,
)
