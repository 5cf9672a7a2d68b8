"""The seam between the HTTP layer and whatever runs fragments (local processes today; E2B and a
warm pool plug in behind the same protocol later)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from fragments.schemas import Fragment, InterpreterResult, WebResult

Phase = Literal["acquiring", "installing", "starting", "running"]
PhaseCallback = Callable[[Phase], Awaitable[None]]


class SandboxService(Protocol):
    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
    ) -> InterpreterResult | WebResult:
        """Run a fragment in the owner's sandbox (a conversation keeps its sandbox)."""
        ...

    async def check(self) -> None:
        """Raise if the backend cannot run sandboxes now (used by /readyz)."""
        ...

    async def aclose(self) -> None:
        """Kill every sandbox and release resources."""
        ...
