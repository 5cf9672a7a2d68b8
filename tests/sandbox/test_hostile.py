"""Hostile cells against the real confinement: files, network, time, processes, memory, output."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fragments.config import Settings
from fragments.sandbox.local.service import LocalSandboxService
from fragments.schemas import InterpreterResult

from .conftest import fragment

pytestmark = pytest.mark.anyio

REPO_FILE = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _folder_contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


async def run(
    service: LocalSandboxService, code: str, owner: str | None = "hostile"
) -> InterpreterResult:
    result = await service.execute(fragment(code), owner=owner)
    assert isinstance(result, InterpreterResult)
    return result


def _probe(paths: list[str]) -> str:
    """A cell that tries to read each path and prints one line per attempt."""
    return (
        "for p in " + repr(paths) + ":\n"
        "    try:\n"
        "        print(p, 'READ', open(p, 'rb').read(40))\n"
        "    except Exception as e:\n"
        "        print(p, 'DENIED', type(e).__name__)\n"
    )


async def test_host_files_secrets_and_database_are_invisible(
    service: LocalSandboxService, host_secret: Path, sandbox_settings: Settings
) -> None:
    database = sandbox_settings.data_dir / "fragments.db"
    database.write_text("SQLite format 3 pretend")
    database.chmod(0o644)
    paths = [
        str(host_secret),
        str(database),
        str(REPO_FILE),
        "/etc/shadow",
        "/root/.bashrc",
        "/proc/1/root/etc/shadow",
        f"/proc/1/root{host_secret}",
    ]
    result = await run(service, _probe(paths))
    assert result.error is None, result.error
    out = "".join(result.stdout)
    assert "READ" not in out, out
    assert out.count("DENIED") == len(paths)
    assert "TOP-SECRET" not in out
    listing = await run(service, "import os\nprint(sorted(os.listdir('/')))")
    assert listing.stdout == [
        "['bin', 'dev', 'etc', 'home', 'lib', 'lib64', 'opt', 'proc', 'run', 'sbin', 'tmp', "
        "'usr', 'var']\n"
    ]
    env = await run(service, "import os\nprint(sorted(os.environ))")
    assert "KEY" not in "".join(env.stdout)


async def test_writes_outside_the_workspace_fail(
    service: LocalSandboxService, host_secret: Path
) -> None:
    targets = [
        "/etc/evil",
        "/etc/passwd",
        "/usr/evil",
        "/usr/lib/evil",
        f"{host_secret.parent}/evil",
        str(host_secret),
        "/var/tmp/evil",
        "/evil",
    ]
    code = (
        "import os\n"
        "for p in " + repr(targets) + ":\n"
        "    try:\n"
        "        os.makedirs(os.path.dirname(p), exist_ok=True)\n"
        "        open(p, 'w').write('x')\n"
        "        print(p, 'WROTE')\n"
        "    except Exception as e:\n"
        "        print(p, 'DENIED', type(e).__name__)\n"
        "open('/home/user/ok.txt', 'w').write('fine')\n"
        "open('/tmp/ok.txt', 'w').write('fine')\n"
        "print('workspace ok')\n"
    )
    result = await run(service, code)
    out = "".join(result.stdout)
    assert "WROTE" not in out, out
    assert out.count("DENIED") == len(targets)
    assert "workspace ok" in out
    assert _folder_contents(host_secret.parent) == {"secret.txt": "TOP-SECRET-VALUE"}


async def test_the_hosts_loopback_and_network_are_unreachable(
    service: LocalSandboxService, host_server: tuple[int, list[str]]
) -> None:
    port, seen = host_server
    code = (
        "import socket\n"
        f"for host, port in [('127.0.0.1', 5432), ('127.0.0.1', 6379), ('127.0.0.1', 8000),"
        f" ('127.0.0.1', {port}), ('localhost', {port}), ('::1', 6379), ('10.0.0.1', 80),"
        " ('pypi.org', 443)]:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=1).close()\n"
        "        print(host, port, 'CONNECTED')\n"
        "    except Exception as e:\n"
        "        print(host, port, 'FAILED', type(e).__name__)\n"
        "import os\n"
        "print(sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') "
        "else 'no sysfs')\n"
    )
    result = await run(service, code)
    out = "".join(result.stdout)
    assert "CONNECTED" not in out, out
    assert out.count("FAILED") == 8
    assert seen == []


async def test_an_endless_loop_is_interrupted_and_the_kernel_survives(
    service: LocalSandboxService,
) -> None:
    await run(service, "kept = 'still here'")
    result = await run(service, "while True:\n    pass")
    assert result.error is not None
    assert result.error.name == "TimeoutError"
    assert result.error.value.startswith("Execution stopped after 3 s")
    after = await run(service, "print(kept)")
    assert after.stdout == ["still here\n"]


async def test_an_uninterruptible_loop_is_killed_and_the_next_run_works(
    service: LocalSandboxService,
) -> None:
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    result = await run(service, code)
    assert result.error is not None
    assert result.error.name == "TimeoutError"
    assert "restarted" in result.error.value
    after = await run(service, "print('fresh')")
    assert after.error is None
    assert after.stdout == ["fresh\n"]


async def test_a_fork_bomb_is_stopped_while_another_sandbox_stays_healthy(
    service: LocalSandboxService,
) -> None:
    await run(service, "1", owner="bystander")
    bomb = asyncio.create_task(run(service, "import os\nwhile True:\n    os.fork()"))
    bystander = await run(service, "print(sum(range(10)))", owner="bystander")
    result = await bomb
    assert bystander.stdout == ["45\n"]
    assert result.error is not None
    assert result.error.name == "ProcessLimitError"
    assert "limit of 64 processes" in result.error.value
    after = await run(service, "print('fresh')")
    assert after.stdout == ["fresh\n"]


async def test_a_10_gb_allocation_ends_with_a_memory_error(service: LocalSandboxService) -> None:
    await run(service, "1", owner="bystander")
    result = await run(service, "x = b'x' * (10 * 2**30)")
    assert result.error is not None
    assert result.error.name == "MemoryError"
    assert result.error.value.startswith("The sandbox ran out of memory (limit 1 GiB)")
    bystander = await run(service, "print('alive')", owner="bystander")
    assert bystander.stdout == ["alive\n"]
    after = await run(service, "print('fresh')")
    assert after.stdout == ["fresh\n"]


async def test_printing_100_mb_is_truncated_with_a_notice(service: LocalSandboxService) -> None:
    cap = 256 * 1024
    result = await run(service, "print('x' * 100_000_000)\nprint('done')")
    assert result.error is None, result.error
    out = "".join(result.stdout)
    assert len(out) < cap + 200
    assert out.endswith("\n[output truncated: 95 MB more not shown]\n")
    flood = await run(service, "import sys\nwhile True:\n    sys.stdout.write('y' * 10_000)")
    assert flood.error is not None
    assert flood.error.name == "OutputLimitError"
    assert "kernel.py" not in flood.error.traceback
    assert "".join(flood.stdout).endswith(" more not shown]\n")
    assert len("".join(flood.stdout)) < cap + 200


async def test_a_raw_oversized_message_cannot_flood_the_app(service: LocalSandboxService) -> None:
    """A cell that bypasses the kernel's cap and publishes one 100 MB message itself."""
    code = (
        "import sys\n"
        "sys.stdout.session.send(sys.stdout.pub_thread, 'stream',"
        " {'name': 'stdout', 'text': 'x' * 100_000_000}, parent=sys.stdout.parent_header)\n"
    )
    result = await run(service, code)
    out = "".join(result.stdout)
    assert len(out) < 1000
    assert "[output truncated" in out
    after = await run(service, "print('ok')")
    assert after.stdout == ["ok\n"]


async def test_nested_namespaces_and_ptrace_are_denied(service: LocalSandboxService) -> None:
    code = (
        "import ctypes, os, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
        "print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"
        "r = subprocess.run(['/usr/bin/python3', '-c', 'print(1)'], capture_output=True)\n"
        "print('subprocess', r.returncode)\n"
    )
    result = await run(service, code)
    assert result.error is None, result.error
    assert result.stdout == ["unshare -1 1\nptrace -1 1\nsubprocess 0\n"]


async def test_the_kernel_socket_folder_is_locked_once_ready(service: LocalSandboxService) -> None:
    code = (
        "import os\n"
        "for op in (lambda: os.unlink('/run/kernel/k-1'),"
        " lambda: os.symlink('/var/run/x.sock', '/run/kernel/k-9'),"
        " lambda: open('/run/kernel/new', 'w')):\n"
        "    try:\n"
        "        op()\n"
        "        print('CHANGED')\n"
        "    except OSError as e:\n"
        "        print('DENIED', type(e).__name__)\n"
    )
    result = await run(service, code)
    assert result.stdout == ["DENIED PermissionError\n" * 3]
    after = await run(service, "print('still talking')")
    assert after.stdout == ["still talking\n"]
