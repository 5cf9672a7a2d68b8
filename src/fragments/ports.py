"""The seams the typed State holds, below every package that implements them: the sandbox
backend (local confined processes in `sandbox/local`, E2B's cloud in `sandbox/e2b`) behind one
protocol. The model layer's seam, `ModelStreamer`, lives with its types in `llm.types`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from fragments.schemas import Fragment, InterpreterResult, WebResult
from fragments.templates import Template

Phase = Literal["acquiring", "installing", "starting", "running"]
# A data file uploaded into the conversation: (plain file name, bytes), written into the
# sandbox's working folder before the fragment runs.
DataFile = tuple[str, bytes]
PhaseCallback = Callable[[Phase], Awaitable[None]]
# What a job's event stream carries: its phases, then its result or its error (the last one).
JobEventType = Literal["phase", "result", "error"]
_T = TypeVar("_T")


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


@runtime_checkable
class JobPublisher(Protocol):
    """A sandbox service whose runs and prepares are jobs that publish their own phases and
    result on the job's event stream (the fleet's nodes, through Redis): given the caller's job
    id, it runs under it, so whoever follows that id sees the node's events, even once the API
    process that submitted the job is gone."""

    async def execute_job(
        self,
        job_id: str,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
        data_files: tuple[DataFile, ...] = (),
    ) -> InterpreterResult | WebResult:
        """`execute`, as the job `job_id`."""
        ...

    async def prepare_job(
        self, job_id: str, template: Template, owner: str
    ) -> PreparedSandbox | None:
        """`prepare`, as the job `job_id`."""
        ...


@dataclass(frozen=True, slots=True)
class JobOwner:
    """Who started a job: only this user, acting for this team, may follow it."""

    user_id: str
    team_id: str | None


class JobEventView(Protocol):
    """One event of a job (`fragments.jobs.events.JobEvent`)."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> JobEventType: ...

    @property
    def data(self) -> dict[str, Any]: ...

    @property
    def terminal(self) -> bool: ...


class JobBoard(Protocol):
    """The API tier's jobs (sandbox runs and prepares): their owners, their event streams
    (replayable from any event id: see `fragments.jobs.events`), and the work that outlives the
    request that started it. In memory for one process; in Redis for a fleet, where any API
    process can follow a job another one started."""

    async def open(self, job_id: str, owner: JobOwner | None) -> None:
        """Record a new job's owner (None: an anonymous caller, whom nobody may follow) and
        publish its first phase, `queued`."""
        ...

    async def owner(self, job_id: str) -> JobOwner | None:
        """The job's owner; None when there is no such job (or it has expired)."""
        ...

    async def publish(self, job_id: str, type: JobEventType, data: dict[str, Any]) -> str:
        """Append an event to the job's stream; its id."""
        ...

    async def read(self, job_id: str, after: str, wait: float) -> Sequence[JobEventView]:
        """The job's events after `after`, waiting up to `wait` seconds for one if none yet."""
        ...

    async def finished(self, job_id: str) -> bool:
        """Whether the job has its terminal event (its result or its error)."""
        ...

    def detach(self, work: Coroutine[Any, Any, _T]) -> Awaitable[_T]:
        """Run `work` to its end even if the request that started it goes away. Wait for it
        through `asyncio.shield`, so a cancelled waiter (a client gone) does not cancel it."""
        ...

    async def aclose(self) -> None:
        """Stop the detached work (at shutdown) and release the board's connections."""
        ...
