"""Processes a benchmark needs: the fake provider and the service, on free local ports."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout} s")


@contextlib.contextmanager
def fake_provider(chunk_size: int, delay: float) -> Iterator[int]:
    """Run bench.fake_stream in its own process; yields its port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.fake_stream",
            "--port",
            str(port),
            "--chunk-size",
            str(chunk_size),
            "--delay",
            str(delay),
        ],
        cwd=ROOT,
    )
    try:
        _wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def service(
    provider_port: int, workers: int, data_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[int, psutil.Process]]:
    """Run `fragments serve` against the fake provider (`extra_env` on top of the usual
    environment); yields its port and process."""
    port = free_port()
    env = {
        **(extra_env or {}),
        **os.environ,
        # One provider unless the bench names a chain (bench/failover.py).
        "FRAGMENTS_FAILOVER_CHAIN": "",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{provider_port}/v1",
        "OPENAI_API_KEY": "bench-key",
        "FRAGMENTS_DATA_DIR": str(data_dir),
        # These measure streaming: every request must reach the provider (no replay from the
        # response cache) and none may be refused by the guest's daily limit.
        "FRAGMENTS_RESPONSE_CACHE": "false",
        "FRAGMENTS_RATE_LIMITS": "false",
        "JUPYTER_PLATFORM_DIRS": "1",
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "fragments"),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        yield port, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds(root: psutil.Process) -> float:
    """User + system CPU of a process and all its children (uvicorn workers)."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total
