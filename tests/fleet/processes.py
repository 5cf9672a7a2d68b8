"""A fleet on loopback for tests: API processes (`fragments serve` with
FRAGMENTS_EMBEDDED_NODE=false) and sandbox nodes (`fragments node`), real processes sharing a
Redis key prefix of their own and one database."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.web.app_process import MACHINE_SETTINGS, free_port, tail

PREVIEW_DOMAIN = "preview.test"


@dataclass
class Proc:
    kind: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)


@dataclass
class Fleet:
    root: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def start(self, kind: str, *args: str, embedded: bool = False, **settings: str) -> Proc:
        """Start an API process (`serve`, as part of a fleet unless `embedded`) or a node
        (`node`), with extra command-line `args`, and wait for its /healthz."""
        port = free_port()
        data = self.root / f"{kind}-{port}"
        data.mkdir()
        env = {**self.env, "FRAGMENTS_DATA_DIR": str(data), **settings}
        if kind == "serve" and not embedded:
            env["FRAGMENTS_EMBEDDED_NODE"] = "false"
        log_path = data / "process.log"
        command = [sys.executable, "-m", "fragments.cli", kind, "--port", str(port), *args]
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [*command, "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        proc = Proc(kind, port, popen, log_path)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while True:
            if popen.poll() is not None:
                pytest.fail(f"{kind} exited ({popen.returncode}):\n{tail(log_path)}")
            try:
                if httpx.get(f"{proc.url}/healthz", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{kind} did not answer /healthz:\n{tail(log_path)}")
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()


def fleet_env(root: Path, prefix: str, **settings: str) -> dict[str, str]:
    """A clean environment (nothing of the developer's leaks in) for every fleet process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL"))
        and (not k.startswith("FRAGMENTS_") or k in MACHINE_SETTINGS)
    }
    env.update(
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONDONTWRITEBYTECODE="1",
        FRAGMENTS_REDIS_URL="redis://127.0.0.1:6379/0",
        FRAGMENTS_FLEET_PREFIX=prefix,
        FRAGMENTS_PREVIEW_DOMAIN=PREVIEW_DOMAIN,
        FRAGMENTS_SECRET_KEY=secrets.token_urlsafe(32),
        FRAGMENTS_SANDBOX_POOL_SIZES="{}",
        FRAGMENTS_NODE_HEARTBEAT_SECONDS="0.5",
        FRAGMENTS_JOB_RECLAIM_IDLE_SECONDS="2",
        FRAGMENTS_RATE_LIMITS="false",
        **settings,
    )
    return env
