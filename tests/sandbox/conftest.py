"""Sandbox tests run the real kernel in the real confinement; the template is built once and
cached under the default sandbox root, so later runs start in seconds."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fragments.config import Settings
from fragments.sandbox.local.build import TemplateEnv, build_template
from fragments.sandbox.local.service import LocalSandboxService
from fragments.schemas import Fragment

INTERPRETER = "code-interpreter-v1"


def fragment(code: str, **fields: object) -> Fragment:
    return Fragment.model_validate({"template": INTERPRETER, "code": code, **fields})


@pytest.fixture(scope="session")
def template_env() -> TemplateEnv:
    """The interpreter environment, built on the first run (a few minutes without uv's cache)."""
    return build_template(Settings(_env_file=None), INTERPRETER)


@pytest.fixture
def sandbox_settings(settings: Settings, template_env: TemplateEnv) -> Settings:
    """Small limits so hostile cells end quickly."""
    return settings.model_copy(
        update={
            "sandbox_root": template_env.path.parents[1],
            "sandbox_run_timeout_seconds": 3.0,
            "sandbox_interrupt_grace_seconds": 1.5,
            "sandbox_output_cap_bytes": 256 * 1024,
            "sandbox_max_processes": 64,
            # Pools are tested on their own (tests/sandbox/test_pool.py); 2 vCPUs are shared.
            "sandbox_pool_sizes": {},
        }
    )


@pytest.fixture
async def service(sandbox_settings: Settings) -> AsyncIterator[LocalSandboxService]:
    svc = LocalSandboxService(sandbox_settings)
    try:
        yield svc
    finally:
        await svc.aclose()


@pytest.fixture
def host_secret() -> Iterator[Path]:
    """A world-readable secret in a world-traversable host folder: only confinement hides it."""
    import secrets
    import shutil

    folder = Path(f"/var/tmp/fragments-secret-{secrets.token_hex(4)}")
    folder.mkdir(mode=0o755)
    secret = folder / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    secret.chmod(0o644)
    yield secret
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def host_server() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on the host's loopback that records whoever connects."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except OSError:
                continue
            seen.append(addr[0])
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join()
    server.close()
