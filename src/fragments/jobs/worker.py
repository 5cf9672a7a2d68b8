"""A node's job loop: read jobs from its own stream and the shared one, run them on the node's
local sandbox service, publish their phases and result on the job's event stream, acknowledge.
Beside it, a heartbeat (the node's registry entry with its free warm slots, and the idle time
of the jobs it is running) and a reclaimer (jobs a dead node left: pending ones idle for
`FRAGMENTS_JOB_RECLAIM_IDLE_SECONDS`, and its stream's jobs never delivered)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from fragments.config import Settings
from fragments.errors import FragmentsError
from fragments.jobs.connection import fleet_keys
from fragments.jobs.events import EventType, RedisJobEvents
from fragments.jobs.queue import Delivery, Job, JobQueue
from fragments.jobs.registry import FleetRegistry, NodeInfo, Placement
from fragments.sandbox.local.build import TemplateBuildError
from fragments.sandbox.local.envs import runnable
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.runs import result_body
from fragments.sandbox.service import Phase
from fragments.sandbox.templates import TEMPLATES, get_template
from fragments.schemas import Fragment, InterpreterResult, Notice, WebResult

log = structlog.get_logger(__name__)

RESTARTED = Notice(
    code="sandbox_restarted",
    detail=(
        "The sandbox this conversation ran in was lost with the machine that held it, so this "
        "run started a new one: variables and files from earlier runs are gone."
    ),
)
_OUTCOME = tuple[EventType, dict[str, Any]]


def restarted(
    previous: Placement | None, job: Job, node_id: str, result_sandbox: str | None
) -> bool:
    """Whether a run's result must say its sandbox restarted: the owner had a sandbox of this
    template on another node (gone, since the API routes to a live owner's node), the run did
    not ask for a restart, and it ran in a new sandbox."""
    if previous is None or job.restart or job.fragment is None:
        return False
    return (
        previous.node_id != node_id
        and previous.template == job.fragment.get("template")
        and result_sandbox != previous.sandbox_id
    )


class NodeWorker:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        service: LocalSandboxService,
        *,
        node_id: str,
        url: str,
    ) -> None:
        self.settings = settings
        self.service = service
        self.id = node_id
        self.url = url
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
        self.max_running = max(1, settings.sandbox_max_count)
        self.running: dict[str, Delivery] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()

    @property
    def streams(self) -> list[str]:
        return [self.keys.node_jobs(self.id), self.keys.new_sandboxes]

    async def start(self) -> None:
        for stream in self.streams:
            await self.queue.ensure_group(stream)
        await self.beat()
        self._loops = [
            asyncio.create_task(self._forever(self._consume, 0.0)),
            asyncio.create_task(self._forever(self.beat, self.settings.node_heartbeat_seconds)),
            asyncio.create_task(
                self._forever(self.reclaim, max(0.5, self.settings.job_reclaim_idle_seconds / 2))
            ),
        ]
        log.info("node_started", node_id=self.id, url=self.url)

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop taking jobs, let running ones finish for `grace` seconds, leave the fleet."""
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(BaseException):
                await task
        if self._jobs:
            await asyncio.wait(list(self._jobs), timeout=grace)
        for task in list(self._jobs):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.registry.leave(self.id)

    async def _forever(self, step: Callable[[], Awaitable[None]], pause: float) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("node_redis_failed", node_id=self.id, error=repr(exc))
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("node_loop_failed", node_id=self.id)
                await asyncio.sleep(1.0)
            if pause:
                await asyncio.sleep(pause)

    # ---- the loops ---------------------------------------------------------------------------

    def shared_room(self) -> int:
        """How many more jobs of the shared stream this node takes now: its free warm slots
        plus a cold start per two CPUs, less those it is running. A node never grabs a burst
        of new sandboxes it can only start cold one after another while another node idles."""
        pool = self.service.pool
        warm = sum(pool.ready(template) for template in pool.sizes)
        limit = warm + max(1, (os.cpu_count() or 2) // 2)
        shared = self.keys.new_sandboxes
        return limit - sum(1 for d in self.running.values() if d.stream == shared)

    async def _consume(self) -> None:
        free = self.max_running - len(self.running)
        if free <= 0:
            await asyncio.sleep(0.05)
            return
        room = self.shared_room()
        if room > 0:
            streams, count, block = self.streams, min(free, room), 2.0
        else:
            # Only its own stream for now; the shared one again as soon as a job ends.
            streams, count, block = self.streams[:1], free, 0.25
        for delivery in await self.queue.read(self.id, streams, count=count, block=block):
            self.spawn(delivery)
        await asyncio.sleep(0)  # the jobs register as running before the next read

    async def beat(self) -> None:
        pool = self.service.pool
        free = {template: pool.ready(template) for template in pool.sizes}
        info = NodeInfo(self.id, self.url, free, len(self.service.sandboxes))
        await self.registry.heartbeat(info)
        if self.running:
            await self.queue.touch(self.id, list(self.running.values()))

    async def reclaim(self) -> None:
        """Take over what dead consumers left: idle pending entries of the shared stream and of
        its own, and a gone node's stream (its pending entries once idle, its undelivered ones
        at once)."""
        idle = self.settings.job_reclaim_idle_seconds
        claimed = await self.queue.reclaim(self.keys.new_sandboxes, self.id, idle)
        # Its own stream too: an entry it is running is heart-beaten, so one idle this long was
        # dropped by a job that lost Redis mid-way (left pending, see `handle`) and would
        # otherwise wait on a live node's stream forever.
        claimed += await self.queue.reclaim(self.keys.node_jobs(self.id), self.id, idle)
        _live, gone = await self.registry.nodes()
        for node_id in gone:
            if node_id == self.id:
                continue
            stream = self.keys.node_jobs(node_id)
            claimed += await self.queue.reclaim(stream, self.id, idle)
            claimed += await self.queue.read(self.id, [stream], count=10, block=None)
            if await self.queue.depth(stream) == 0:
                await self.registry.retire(node_id)
        for delivery in claimed:
            log.info("job_reclaimed", node_id=self.id, stream=delivery.stream)
            self.spawn(delivery)

    # ---- one job -----------------------------------------------------------------------------

    def spawn(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self.handle(delivery))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def handle(self, delivery: Delivery) -> None:
        """Run one delivered job unless its result is already out (module docstring)."""
        job = delivery.job
        if job is None:
            await self.queue.dead_letter(delivery, "unreadable job")
            return
        if job.id in self.running:
            return
        self.running[job.id] = delivery
        try:
            ttl = self.settings.job_events_ttl_seconds
            finished, attempt = await asyncio.gather(
                self.events.finished(job.id), self.queue.begin_attempt(job.id, ttl)
            )
            if finished:
                await self.queue.ack(delivery)
                return
            if attempt > self.settings.job_max_attempts:
                tries = attempt - 1
                await self.events.publish(
                    job.id,
                    "error",
                    {
                        "error": "job_failed",
                        "detail": f"The sandbox job failed {tries} times; it was given up.",
                        "status": 503,
                    },
                )
                await self.queue.dead_letter(delivery, f"gave up after {tries} attempts")
                return
            kind, data = await self.run(job)
            await self.events.publish(job.id, kind, data)
            await self.queue.ack(delivery)
        except (RedisError, OSError) as exc:
            # Left pending: reclaimed once Redis answers and its idle time has passed.
            log.warning("job_redis_failed", job_id=job.id, error=repr(exc))
        finally:
            self.running.pop(job.id, None)

    async def run(self, job: Job) -> _OUTCOME:
        """What the job answers: ("result", data) or ("error", {error, detail, status})."""
        try:
            if job.kind == "run":
                return "result", await self._execute(job)
            if job.kind == "prepare":
                return "result", await self._prepare(job)
            if job.kind == "build":
                return "result", await self._build(job)
            if job.kind == "kill":
                return "result", {"ok": await self.service.kill(job.sandbox_id)}
            granted = await self.service.extend(job.sandbox_id, job.seconds)
            if granted is not None:
                await self.registry.keep(job.sandbox_id, granted)
            return "result", {"granted": granted}
        except FragmentsError as exc:
            return "error", {
                "error": exc.code,
                "detail": exc.detail,
                "status": exc.status_code,
                "headers": exc.headers,
            }
        except (RedisError, OSError):
            raise
        except Exception:
            log.exception("job_failed", job_id=job.id, kind=job.kind)
            return "error", {
                "error": "internal",
                "detail": "Something went wrong on our side; please try again.",
                "status": 500,
            }

    async def _execute(self, job: Job) -> dict[str, Any]:
        fragment = Fragment.model_validate(job.fragment or {})
        previous = await self.registry.owned(job.owner) if job.owner else None

        async def on_phase(phase: Phase) -> None:
            with contextlib.suppress(RedisError, OSError):
                await self.events.publish(job.id, "phase", {"phase": phase})

        data = tuple((name, base64.b64decode(encoded)) for name, encoded in job.data_files)
        result: InterpreterResult | WebResult = await self.service.execute(
            fragment, owner=job.owner, restart=job.restart, on_phase=on_phase, data_files=data
        )
        moved = previous is None or (previous.sandbox_id, previous.node_id) != (
            result.sandbox_id,
            self.id,
        )
        if result.sandbox_id is not None and job.owner is not None and moved:
            await self.registry.place(
                result.sandbox_id,
                self.id,
                fragment.template,
                job.owner,
                self.settings.sandbox_max_lifetime_seconds,
            )
        if restarted(previous, job, self.id, result.sandbox_id):
            result = result.model_copy(update={"notice": RESTARTED})
        return result_body(result)

    async def _build(self, job: Job) -> dict[str, Any]:
        """Build a template's environment on this node (what `fragments templates build` does
        on one machine), each step published as a `building` phase with its progress."""
        template = TEMPLATES.get(job.template)
        if template is None or not runnable(template):
            raise FragmentsError(
                f"'{job.template}' is not a template local sandboxes can build; "
                f"known: {', '.join(t for t, v in TEMPLATES.items() if runnable(v))}.",
                code="unknown_template",
                status_code=400,
            )
        loop = asyncio.get_running_loop()

        def progress(step: str, done: int, total: int) -> None:
            # Called from the build's thread: the event is published on the node's loop.
            event = {"phase": "building", "step": step, "done": done, "total": total}
            asyncio.run_coroutine_threadsafe(self._phase(job.id, event), loop)

        try:
            env, built = await self.service.envs.build_now(
                template, force=job.force, progress=progress
            )
        except TemplateBuildError as exc:
            raise FragmentsError(
                f"The {template.id} environment could not be built on node {self.id}: {exc}",
                code="build_failed",
                status_code=500,
            ) from exc
        return {"template": template.id, "node": self.id, "path": str(env.path), "built": built}

    async def _phase(self, job_id: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.events.publish(job_id, "phase", data)

    async def _prepare(self, job: Job) -> dict[str, Any]:
        assert job.owner is not None
        prepared = await self.service.prepare(get_template(job.template), job.owner)
        if prepared is None:
            return {"prepared": None}
        await self.registry.place(
            prepared.sandbox_id,
            self.id,
            prepared.template,
            job.owner,
            self.settings.sandbox_max_lifetime_seconds,
        )
        return {
            "prepared": {
                "sandbox_id": prepared.sandbox_id,
                "template": prepared.template,
                "url": prepared.url,
            }
        }
