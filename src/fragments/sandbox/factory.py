"""Builds the configured sandbox service."""

from __future__ import annotations

from fragments.config import Settings
from fragments.sandbox.service import SandboxService


async def create_sandbox_service(settings: Settings) -> SandboxService:
    """The sandbox backend the settings ask for (only `local` exists so far)."""
    from fragments.sandbox.local.service import LocalSandboxService

    return LocalSandboxService(settings)
