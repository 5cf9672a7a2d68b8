"""POST /api/sandbox (placeholder until the local sandbox lands)."""

from fastapi import APIRouter

router = APIRouter()
