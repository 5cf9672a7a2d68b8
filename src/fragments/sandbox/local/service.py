"""Placeholder local service, replaced by the real backend."""

from __future__ import annotations

from fragments.config import Settings
from fragments.errors import UpstreamError
from fragments.schemas import Fragment, InterpreterResult, WebResult
from fragments.sandbox.service import PhaseCallback


class LocalSandboxService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
    ) -> InterpreterResult | WebResult:
        raise UpstreamError("Local sandboxes are not available yet.")

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
