"""Template builds as fleet jobs (`fragments templates build --fleet`): a `build` job on each
live node's stream, run by the node's worker with the real build code, its steps published as
`building` phases and its outcome as the job's result or error. Real Redis (a key prefix per
test), a real node worker in this process."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from fragments.config import Settings
from fragments.jobs.fleet import FleetSandboxService
from fragments.jobs.keys import FleetKeys
from fragments.jobs.queue import Job
from fragments.jobs.worker import NodeWorker
from fragments.sandbox.local.build import TemplateEnv, build_template
from fragments.sandbox.local.service import LocalSandboxService

pytestmark = pytest.mark.anyio

INTERPRETER = "code-interpreter-v1"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis(decode_responses=True, socket_timeout=10)
    try:
        await client.ping()
    except OSError:
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable (it runs on dev and CI machines)")
    yield client
    await client.aclose()


@pytest.fixture
async def keys(redis: Redis) -> AsyncIterator[FleetKeys]:
    prefix = f"test-build-{secrets.token_hex(4)}:"
    yield FleetKeys(prefix)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)


@pytest.fixture(scope="module")
def built() -> TemplateEnv:
    """The interpreter's environment in the default cache (built once, as the sandbox tests do)."""
    return build_template(Settings(_env_file=None), INTERPRETER)  # type: ignore[call-arg]


@pytest.fixture
def empty_root() -> Iterator[Path]:
    """A sandbox root of its own with no template built (under /var/tmp: sandbox users must be
    able to traverse it, which pytest's private temporary folders do not allow)."""
    root = Path(tempfile.mkdtemp(prefix="fragments-build-test-", dir="/var/tmp"))
    root.chmod(0o755)
    (root / "templates").mkdir(mode=0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _settings(tmp_path: Path, keys: FleetKeys, root: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        redis_url="redis://127.0.0.1:6379/0",
        fleet_prefix=keys.prefix,
        embedded_node=False,
        sandbox_root=root,
        sandbox_pool_sizes={},
        job_wait_seconds=120.0,
    )


@asynccontextmanager
async def node_and_fleet(settings: Settings) -> AsyncIterator[FleetSandboxService]:
    """A node (its worker on a local sandbox service) and the API side of the fleet."""
    service = LocalSandboxService(settings)
    redis = Redis(decode_responses=True, socket_timeout=15)
    worker = NodeWorker(settings, redis, service, node_id="builder", url="http://127.0.0.1:1")
    fleet = FleetSandboxService.connect(settings)
    try:
        await worker.start()
        yield fleet
    finally:
        await fleet.aclose()
        await worker.aclose()
        await service.aclose()
        await redis.aclose()


async def test_a_built_template_is_found_on_every_node_not_rebuilt(
    tmp_path: Path, keys: FleetKeys, built: TemplateEnv
) -> None:
    settings = _settings(tmp_path, keys, built.path.parents[1])
    phases: list[tuple[str, dict[str, Any]]] = []

    async def on_phase(node: str, data: dict[str, Any]) -> None:
        phases.append((node, data))

    async with node_and_fleet(settings) as fleet:
        [outcome] = await fleet.build_template(INTERPRETER, on_phase=on_phase)
    assert outcome == {
        "template": INTERPRETER,
        "node": "builder",
        "path": str(built.path),
        "built": False,
    }
    assert phases == []  # nothing was built


async def test_a_failing_build_reports_its_steps_then_a_clear_error(
    tmp_path: Path, keys: FleetKeys, empty_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The build's package index cannot be reached and uv may not use its cache: the real
    # build creates the environment, starts installing, and fails there.
    monkeypatch.setenv("UV_NO_CACHE", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:1/simple")
    settings = _settings(tmp_path, keys, empty_root)
    phases: list[dict[str, Any]] = []

    async def on_phase(node: str, data: dict[str, Any]) -> None:
        assert node == "builder"
        phases.append(data)

    async with node_and_fleet(settings) as fleet:
        [outcome] = await fleet.build_template(INTERPRETER, on_phase=on_phase)
    assert outcome["node"] == "builder"
    assert outcome["error"] == "build_failed", outcome
    assert INTERPRETER in outcome["detail"]
    assert [p["phase"] for p in phases] == ["building"] * len(phases)
    assert [(p["step"], p["done"], p["total"]) for p in phases[:2]] == [
        ("creating the environment", 0, 4),
        (phases[1]["step"], 1, 4),
    ]
    assert phases[1]["step"].startswith("installing ")
    # Nothing half-built is left where a sandbox would look for it.
    assert [
        p.name for p in (empty_root / "templates").iterdir() if not p.name.startswith(".")
    ] == []


async def test_an_unknown_template_is_refused_by_the_node(
    tmp_path: Path, keys: FleetKeys, redis: Redis, empty_root: Path
) -> None:
    settings = _settings(tmp_path, keys, empty_root)
    service = LocalSandboxService(settings)
    worker = NodeWorker(settings, redis, service, node_id="n1", url="http://127.0.0.1:1")
    try:
        stream = keys.node_jobs("n1")
        job = Job("build", template="../../etc")
        await worker.queue.submit(stream, job)
        [delivery] = await worker.queue.read("n1", [stream], count=1, block=None)
        await worker.handle(delivery)
        [event] = await worker.events.read(job.id)
        assert event.type == "error"
        assert event.data["error"] == "unknown_template"
        assert event.data["status"] == 400
        assert await worker.queue.depth(stream) == 0  # answered and acknowledged
    finally:
        await service.aclose()


def test_a_build_job_survives_the_stream_round_trip() -> None:
    job = Job("build", template=INTERPRETER, force=True)
    assert Job.load(job.dump()) == job
    # A job written before `force` existed still reads (the field defaults).
    legacy = '{"kind":"build","id":"abc","template":"code-interpreter-v1"}'
    assert Job.load(legacy).force is False
