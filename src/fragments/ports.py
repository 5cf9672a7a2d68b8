"""The seams the typed State holds, below every package that implements them: the sandbox
backend (local confined processes in `sandbox/local`, E2B's cloud in `sandbox/e2b`) behind one
protocol. The model layer's seam, `ModelStreamer`, lives with its types in `llm.types`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from fragments.schemas import Fragment, InterpreterResult, WebResult
from fragments.templates import Template

Phase = Literal["acquiring", "installing", "starting", "running"]
# A data file uploaded into the conversation: (plain file name, bytes), written into the
# sandbox's working folder before the fragment runs.
DataFile = tuple[str, bytes]
PhaseCallback = Callable[[Phase], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PreparedSandbox:
    """A conversation's sandbox made ready before its fragment is known (`prepare`)."""

    sandbox_id: str
    template: str
    # The preview (the template's placeholder page until the fragment runs); None for the
    # interpreter.
    url: str | None


class SandboxService(Protocol):
    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
        data_files: tuple[DataFile, ...] = (),
    ) -> InterpreterResult | WebResult:
        """Run a fragment in the owner's sandbox (a conversation keeps its sandbox), with the
        conversation's data files in its working folder."""
        ...

    async def prepare(self, template: Template, owner: str) -> PreparedSandbox | None:
        """Take or start the owner's sandbox for `template` without running any code, so the
        fragment's run that follows is an in-place edit; idempotent per owner. None when this
        backend cannot prepare that template."""
        ...

    async def check(self) -> None:
        """Raise if the backend cannot run sandboxes now (used by /readyz)."""
        ...

    async def kill(self, sandbox_id: str) -> bool:
        """Kill a sandbox now; False when no live sandbox has this id."""
        ...

    async def extend(self, sandbox_id: str, seconds: float) -> float | None:
        """Keep a sandbox alive for `seconds` of idleness (capped); None if it is not live."""
        ...

    def preview_socket(self, sandbox_id: str, port: int) -> Path | None:
        """The unix socket serving a live sandbox's port (for the preview proxy), or None."""
        ...

    def preview_expired(self, sandbox_id: str) -> bool:
        """True when the id belonged to a sandbox that has since been closed."""
        ...

    async def aclose(self) -> None:
        """Kill every sandbox and release resources."""
        ...


@dataclass(frozen=True, slots=True)
class RemotePreview:
    """Where another process serves a sandbox's preview: its base URL and the headers that
    name the preview and prove the caller is the API tier."""

    base_url: str
    headers: tuple[tuple[str, str], ...]


@runtime_checkable
class RemotePreviews(Protocol):
    """A sandbox service whose previews live in other processes (the fleet's nodes)."""

    async def preview_target(
        self, sandbox_id: str, port: int
    ) -> RemotePreview | Literal["expired"] | None:
        """Where the preview is served; "expired" when its sandbox is gone (closed, or lost
        with its node); None when no sandbox has this id."""
        ...


class ResponseStore(Protocol):
    """Where the response cache keeps answers: strings by key, each with a time to live."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float) -> None: ...
