"""The caps as the kernel sees them: cgroups on this machine, and the rlimit fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from fragments.config import Settings
from fragments.sandbox.local.limits import CgroupV1Limits, limits_backend
from fragments.sandbox.local.service import LocalSandboxService
from fragments.schemas import InterpreterResult

from .conftest import fragment

pytestmark = pytest.mark.anyio


def _read(path: Path) -> str:
    return path.read_text().strip()


@pytest.mark.skipif(limits_backend() != "cgroup-v1", reason="needs writable cgroups v1")
async def test_the_kernel_runs_inside_its_cgroups(service: LocalSandboxService) -> None:
    result = await service.execute(fragment("import os\nprint(os.getpid())"), owner="cg")
    assert isinstance(result, InterpreterResult)
    sandbox = service.sandbox_for("cg")
    assert sandbox is not None
    limits = sandbox._limits
    assert isinstance(limits, CgroupV1Limits)
    assert _read(limits.memory / "memory.limit_in_bytes") == str(2**30)
    assert _read(limits.pids / "pids.max") == "64"
    assert _read(limits.cpu / "cpu.cfs_quota_us") == "100000"
    members = set(_read(limits.memory / "cgroup.procs").split())
    assert len(members) >= 3  # bwrap, its pid-1 reaper, the kernel (and maybe more)
    assert members == set(_read(limits.pids / "cgroup.procs").split())
    await service.aclose()
    assert not limits.memory.exists()
    assert not limits.pids.exists()


async def test_rlimit_fallback_caps_memory_and_processes(sandbox_settings: Settings) -> None:
    svc = LocalSandboxService(sandbox_settings.model_copy(update={"sandbox_limits": "rlimit"}))
    try:
        big = await svc.execute(fragment("x = b'x' * (10 * 2**30)"), owner="r")
        assert isinstance(big, InterpreterResult)
        assert big.error is not None
        assert big.error.name == "MemoryError"
        after = await svc.execute(
            fragment("import resource\nprint(resource.getrlimit(resource.RLIMIT_NPROC))"),
            owner="r",
        )
        assert isinstance(after, InterpreterResult)
        assert after.stdout == ["(64, 64)\n"]
    finally:
        await svc.aclose()
