"""POST /api/chat (placeholder until the chat stream lands)."""

from fastapi import APIRouter

router = APIRouter()
