"""The API side of the fleet: a SandboxService that runs nothing itself and sends every
operation as a job to a node (FRAGMENTS_EMBEDDED_NODE=false).

Routing: a job for a conversation whose sandbox lives on a live node goes to that node's
stream; a new sandbox goes to the live node with the most free warm slots of its template, or,
when none has one, to the shared stream that any node takes from. A conversation whose node is
gone has lost its sandbox: its next run starts a new one elsewhere, and the result carries
`notice: {code: "sandbox_restarted", ...}`. The caller then waits on the job's event stream
(phases are passed to `on_phase`, as the embedded service does), for at most
FRAGMENTS_JOB_WAIT_SECONDS. Redis unreachable: 503 `fleet_unavailable`; no live node: 503
`sandbox_unavailable`; a full stream: 503 `queue_full` (all with Retry-After)."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from fragments.config import Settings
from fragments.errors import FragmentsError
from fragments.jobs.connection import (
    NODE_KEY_HEADER,
    PREVIEW_HEADER,
    fleet_keys,
    fleet_redis,
    node_key,
)
from fragments.jobs.events import RedisJobEvents, follow
from fragments.jobs.queue import Job, JobQueue, new_job_id
from fragments.jobs.registry import FleetRegistry, NodeInfo
from fragments.jobs.stats import FleetSummary, export_queue_metrics, queue_stats, summarize
from fragments.ports import DataFile, RemotePreview
from fragments.sandbox.service import (
    PhaseCallback,
    PreparedSandbox,
    SandboxUnavailable,
    prepare_program,
)
from fragments.schemas import Fragment, InterpreterResult, WebResult
from fragments.templates import Template

log = structlog.get_logger(__name__)

# Hears a node's build steps: (node id, {"phase": "building", "step", "done", "total"}).
BuildPhase = Callable[[str, dict[str, Any]], Awaitable[None]]
_PHASES = frozenset({"acquiring", "installing", "starting", "running"})
# Control jobs (kill, extend) answer quickly or not at all.
_CONTROL_WAIT_SECONDS = 15.0


class FleetUnavailable(FragmentsError):
    """Redis, which carries the fleet's jobs, cannot be reached."""

    status_code = 503
    code = "fleet_unavailable"


def pick_node(nodes: list[NodeInfo], depths: list[int], template: str) -> NodeInfo | None:
    """The node with the most warm slots of `template` still free once the jobs already in its
    stream are counted (heartbeats are seconds old); a tie is broken at random, so a burst of
    new sandboxes arriving together spreads over the nodes instead of all landing on the one
    that looked freest. None when no node has a slot to spare: the job then goes to the shared
    stream, taken by whichever node is free first."""
    spare = [node.free.get(template, 0) - depth for node, depth in zip(nodes, depths, strict=True)]
    most = max(spare, default=0)
    if most <= 0:
        return None
    return random.choice([n for n, s in zip(nodes, spare, strict=True) if s == most])


class FleetSandboxService:
    """SandboxService over the fleet's nodes (see the module docstring)."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = fleet_keys(settings)
        self.queue = JobQueue(
            redis,
            self.keys,
            max_jobs=settings.job_queue_max,
            max_attempts=settings.job_max_attempts,
        )
        self.events = RedisJobEvents(redis, self.keys, settings.job_events_ttl_seconds)
        self.registry = FleetRegistry(
            redis, self.keys, heartbeat_seconds=settings.node_heartbeat_seconds
        )
        self._preview_headers = ((NODE_KEY_HEADER, node_key(settings)),)

    @classmethod
    def connect(cls, settings: Settings) -> FleetSandboxService:
        return cls(settings, fleet_redis(settings))

    # ---- routing -----------------------------------------------------------------------------

    async def _live_nodes(self) -> list[NodeInfo]:
        live, _gone = await self.registry.nodes()
        if not live:
            raise SandboxUnavailable(
                "No sandbox node is running right now; please try again shortly.",
                headers={"Retry-After": "5"},
            )
        return live

    async def _stream_for(self, owner: str | None, template: str, restart: bool) -> str:
        """Where a job for the owner's sandbox of `template` goes (module docstring)."""
        if owner is not None and not restart:
            placed = await self.registry.owned(owner)
            if placed is not None and await self.registry.node(placed.node_id) is not None:
                return self.keys.node_jobs(placed.node_id)
        nodes = await self._live_nodes()
        depths = [await self.queue.depth(self.keys.node_jobs(n.id)) for n in nodes]
        node = pick_node(nodes, depths, template)
        return self.keys.node_jobs(node.id) if node is not None else self.keys.new_sandboxes

    async def _submit_and_wait(
        self, stream: str, job: Job, on_phase: PhaseCallback | None, wait: float
    ) -> dict[str, Any]:
        await self.queue.submit(stream, job)
        async for event in follow(self.events, job.id, within=wait):
            if event.type == "phase":
                phase = event.data.get("phase")
                if on_phase is not None and phase in _PHASES:
                    await on_phase(phase)
            elif event.type == "result":
                return event.data
            else:
                raise _job_error(event.data)
        raise SandboxUnavailable("The sandbox job ended without a result.")

    @asynccontextmanager
    async def _fleet(self) -> AsyncIterator[None]:
        """Redis failures as one clear 503; a job not answered in time as another."""
        try:
            yield
        except (RedisError, OSError) as exc:
            log.warning("fleet_redis_failed", error=repr(exc))
            raise FleetUnavailable(
                "The sandbox fleet cannot be reached right now (its queue is down); "
                "please try again shortly.",
                headers={"Retry-After": "5"},
            ) from exc
        except TimeoutError as exc:
            raise SandboxUnavailable(
                "The sandbox did not answer in time; please try again.",
                headers={"Retry-After": "5"},
            ) from exc

    # ---- the protocol ------------------------------------------------------------------------

    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
        data_files: tuple[DataFile, ...] = (),
    ) -> InterpreterResult | WebResult:
        """Run a fragment on the node holding the owner's sandbox, or on a new one."""
        return await self.execute_job(
            new_job_id(),
            fragment,
            owner=owner,
            restart=restart,
            on_phase=on_phase,
            data_files=data_files,
        )

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
        """`execute` as the job `job_id`: the node publishes its phases and result on that
        job's event stream, which any API process can follow (`fragments.ports.JobPublisher`)."""
        prepare_program(fragment)  # caller mistakes are answered here, not by a node
        job = Job(
            "run",
            id=job_id,
            owner=owner,
            fragment=fragment.model_dump(mode="json"),
            restart=restart,
            template=fragment.template,
            data_files=[[name, base64.b64encode(data).decode()] for name, data in data_files],
        )
        async with self._fleet():
            stream = await self._stream_for(owner, fragment.template, restart)
            data = await self._submit_and_wait(
                stream, job, on_phase, self.settings.job_wait_seconds
            )
        if "url" in data:
            return WebResult.model_validate(data)
        return InterpreterResult.model_validate(data)

    async def prepare(self, template: Template, owner: str) -> PreparedSandbox | None:
        return await self.prepare_job(new_job_id(), template, owner)

    async def prepare_job(
        self, job_id: str, template: Template, owner: str
    ) -> PreparedSandbox | None:
        """`prepare` as the job `job_id` (see `execute_job`)."""
        job = Job("prepare", id=job_id, owner=owner, template=template.id)
        async with self._fleet():
            stream = await self._stream_for(owner, template.id, False)
            data = await self._submit_and_wait(stream, job, None, self.settings.job_wait_seconds)
        prepared = data.get("prepared")
        if not isinstance(prepared, dict):
            return None
        return PreparedSandbox(
            str(prepared["sandbox_id"]), str(prepared["template"]), prepared.get("url")
        )

    async def build_template(
        self, template_id: str, *, force: bool = False, on_phase: BuildPhase | None = None
    ) -> list[dict[str, Any]]:
        """Build a template's environment on every live node (each keeps its own): a `build`
        job on each node's stream, their `building` phases passed to `on_phase(node id, phase
        data)`. One entry per node: its result (`template`, `node`, `path`, `built`), or its
        error (`node`, `error`, `detail`)."""
        async with self._fleet():
            nodes = await self._live_nodes()
            jobs = [Job("build", template=template_id, force=force) for _ in nodes]
            for node, job in zip(nodes, jobs, strict=True):
                await self.queue.submit(self.keys.node_jobs(node.id), job)

            async def outcome(node: NodeInfo, job: Job) -> dict[str, Any]:
                async for event in follow(
                    self.events, job.id, within=self.settings.job_wait_seconds
                ):
                    if event.type == "phase":
                        if on_phase is not None:
                            await on_phase(node.id, event.data)
                    elif event.type == "result":
                        return event.data
                    else:
                        return {"node": node.id, **event.data}
                return {"node": node.id, "error": "internal", "detail": "No result came."}

            return list(
                await asyncio.gather(*(outcome(n, j) for n, j in zip(nodes, jobs, strict=True)))
            )

    async def _control(self, job: Job) -> dict[str, Any] | None:
        """Send a kill or extend to the node holding the sandbox; None if it is gone."""
        async with self._fleet():
            node_id = await self.registry.node_of(job.sandbox_id)
            if node_id is None or await self.registry.node(node_id) is None:
                return None
            return await self._submit_and_wait(
                self.keys.node_jobs(node_id), job, None, _CONTROL_WAIT_SECONDS
            )

    async def kill(self, sandbox_id: str) -> bool:
        data = await self._control(Job("kill", sandbox_id=sandbox_id))
        return bool(data and data.get("ok"))

    async def extend(self, sandbox_id: str, seconds: float) -> float | None:
        data = await self._control(Job("extend", sandbox_id=sandbox_id, seconds=seconds))
        granted = data.get("granted") if data else None
        return float(granted) if isinstance(granted, int | float) else None

    async def check(self) -> None:
        """Raise unless Redis answers and at least one node is alive."""
        async with self._fleet():
            await self._live_nodes()

    def preview_socket(self, sandbox_id: str, port: int) -> Path | None:
        return None  # previews live on the nodes: see preview_target

    def preview_expired(self, sandbox_id: str) -> bool:
        return False

    async def preview_target(
        self, sandbox_id: str, port: int
    ) -> RemotePreview | Literal["expired"] | None:
        """The node serving this sandbox's preview, with the headers it expects."""
        try:
            node_id = await self.registry.node_of(sandbox_id)
            if node_id is None:
                return None
            node = await self.registry.node(node_id)
        except (RedisError, OSError) as exc:
            log.warning("fleet_preview_redis_failed", error=repr(exc))
            return None
        if node is None:
            return "expired"  # lost with its node
        headers = (*self._preview_headers, (PREVIEW_HEADER, f"{port}-{sandbox_id}"))
        return RemotePreview(node.url, headers)

    async def fleet_summary(self) -> FleetSummary:
        """Live nodes and the queue's jobs, for `GET /api/status`."""
        live, _gone = await self.registry.nodes()
        return summarize(len(live), await queue_stats(self.redis, self.keys))

    async def export_queue_metrics(self) -> None:
        """Record the queue's gauges for /metrics (see jobs/stats.py)."""
        await export_queue_metrics(self.redis, self.keys)

    async def aclose(self) -> None:
        # The nodes own the sandboxes: an API process stopping leaves them running.
        await self.redis.aclose()


def _job_error(data: dict[str, Any]) -> FragmentsError:
    status = data.get("status")
    headers = data.get("headers")
    return FragmentsError(
        str(data.get("detail") or "The sandbox job failed."),
        code=str(data.get("error") or "internal"),
        status_code=status if isinstance(status, int) else 500,
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else None,
    )
