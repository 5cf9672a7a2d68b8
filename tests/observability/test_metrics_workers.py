"""`fragments serve --workers 2`: both workers count into one folder, and a scrape (of the
metrics port, or of `/metrics` on whichever worker answers) adds them up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from tests.observability.metrics_text import Scrape
from tests.web.app_process import MACHINE_SETTINGS, free_port, tail

TOKEN = "workers-metrics-token"


def _serve(
    data: Path, port: int, metrics_port: int, folder: Path, log: BinaryIO
) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL"))
        and (not k.startswith("FRAGMENTS_") or k in MACHINE_SETTINGS)
    }
    env.update(
        FRAGMENTS_DATA_DIR=str(data),
        FRAGMENTS_METRICS_PORT=str(metrics_port),
        FRAGMENTS_METRICS_TOKEN=TOKEN,
        # No warm sandboxes: two workers filling pools would only load the machine.
        FRAGMENTS_SANDBOX_POOL_SIZES="{}",
        PROMETHEUS_MULTIPROC_DIR=str(folder),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    command = [sys.executable, "-m", "fragments.cli", "serve", "--port", str(port)]
    return subprocess.Popen(
        [*command, "--workers", "2", "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the app exited ({proc.returncode}):\n{tail(log)}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the app did not answer /healthz:\n{tail(log)}")
        time.sleep(0.2)


def _counting_pids(folder: Path) -> set[str]:
    """The processes that have counted something (prometheus-client's file per process)."""
    return {path.stem.rsplit("_", 1)[-1] for path in folder.glob("counter_*.db")}


def test_two_workers_add_up(tmp_path: Path) -> None:
    data, folder = tmp_path / "data", tmp_path / "metrics"
    data.mkdir()
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"")  # a previous run's: removed at start
    port, metrics_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    with (data / "server.log").open("wb") as log:
        proc = _serve(data, port, metrics_port, folder, log)
        try:
            _check(proc, url, metrics_port, folder, data)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _check(
    proc: subprocess.Popen[bytes], url: str, metrics_port: int, folder: Path, data: Path
) -> None:
    """Requests until both workers have counted some, then the scrapes add them all up."""
    _wait_ready(proc, url, data / "server.log")
    assert not (folder / "counter_999999.db").exists()

    def hit(_: int) -> int:
        # A new connection each: the kernel hands connections to both workers.
        return httpx.get(f"{url}/api/templates", timeout=10).status_code

    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while len(_counting_pids(folder)) < 2:
            assert sent < 2000, "one worker served every request"
            assert all(status == 200 for status in pool.map(hit, range(40)))
            sent += 40

    port_scrape = Scrape(httpx.get(f"http://127.0.0.1:{metrics_port}/", timeout=10).text)
    labels = {"method": "GET", "route": "/api/templates", "status": "200"}
    assert port_scrape.value("fragments_http_requests_total", **labels) == sent
    durations = port_scrape.value(
        "fragments_http_request_duration_seconds_count", method="GET", route="/api/templates"
    )
    assert durations == sent

    # Any worker's /metrics adds up the same folder.
    app_scrape = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert app_scrape.status_code == 200
    assert Scrape(app_scrape.text).value("fragments_http_requests_total", **labels) == sent
