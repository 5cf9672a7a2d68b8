"""The real app in its own process for browser tests (`python -m fragments.cli serve`), so the
page talks to exactly what `make run` serves."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium")
STATIC = Path(__file__).resolve().parents[2] / "src" / "fragments" / "web" / "static"
# Where the machine keeps its sandbox templates is the machine's, not the developer's: it passes.
MACHINE_SETTINGS = ("FRAGMENTS_SANDBOX_ROOT", "FRAGMENTS_SANDBOX_PYTHON")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def serve_app(data: Path, *, port: int | None = None, **settings: str) -> Iterator[str]:
    """Serve the app on 127.0.0.1 with `settings` as its environment (on top of a clean one:
    no key, base URL or FRAGMENTS_* setting of the developer's leaks in); yields its URL."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium package is not installed; make install installs it")
    if not (STATIC / "vendor" / "preact.js").is_file():
        pytest.fail("the UI's vendor files are missing: run `make assets`")
    port = port or free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL"))
        and (not k.startswith("FRAGMENTS_") or k in MACHINE_SETTINGS)
    }
    env.update(
        FRAGMENTS_DATA_DIR=str(data),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONDONTWRITEBYTECODE="1",
        **settings,
    )
    log_path = data / "server.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "fragments.cli", "serve", "--port", str(port)]
        proc = subprocess.Popen(
            [*command, "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"the app exited ({proc.returncode}):\n{tail(log_path)}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the app did not answer /healthz:\n{tail(log_path)}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
