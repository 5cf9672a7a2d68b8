"""The egress proxy's own cost: CONNECT set-up time and tunnel throughput, on this machine.

`.venv/bin/python -m bench egress` runs the proxy on a unix socket in front of a local TCP
server (a "registry" name mapped to 127.0.0.1 by an injected resolver, so nothing leaves the
machine) and prints: the time from connecting to the socket to the 200 of a CONNECT (p50/p95),
the throughput of one tunnel downloading 256 MiB, and 32 tunnels at once.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from fragments.observability.logs import configure_logging
from fragments.sandbox.local.egress import EgressProxy, Upstreams, registries_policy

_CHUNK = b"x" * 65536


async def _source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends the number of MiB asked for in the first line, then closes."""
    line = await reader.readline()
    for _ in range(int(line) * 16):
        writer.write(_CHUNK)
        await writer.drain()
    writer.close()


async def _tunnel(path: Path, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(f"CONNECT registry.bench:{port} HTTP/1.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


async def _download(path: Path, port: int, mib: int) -> int:
    reader, writer = await _tunnel(path, port)
    writer.write(f"{mib}\n".encode())
    total = 0
    while data := await reader.read(1 << 20):
        total += len(data)
    writer.close()
    return total


async def _run() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    server = await asyncio.start_server(_source, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="egress-bench-"))
    proxy = EgressProxy(
        registries_policy([f"registry.bench:{port}"]),
        folder / "p.sock",
        resolver=resolve,
        upstreams=Upstreams(),
    )
    await proxy.start()
    try:
        setups = []
        for _ in range(200):
            started = time.perf_counter()
            _, writer = await _tunnel(proxy.path, port)
            setups.append((time.perf_counter() - started) * 1000)
            writer.write(b"0\n")
            writer.close()
        p95 = statistics.quantiles(setups, n=20)[-1]
        print(
            f"egress CONNECT set-up (200 tunnels): p50 {statistics.median(setups):.2f} ms, "
            f"p95 {p95:.2f} ms"
        )
        started = time.perf_counter()
        total = await _download(proxy.path, port, 256)
        seconds = time.perf_counter() - started
        print(
            f"egress one tunnel: {total / 2**20:.0f} MiB in {seconds:.2f} s = "
            f"{total / 2**20 / seconds:.0f} MiB/s"
        )
        started = time.perf_counter()
        totals = await asyncio.gather(*(_download(proxy.path, port, 8) for _ in range(32)))
        seconds = time.perf_counter() - started
        print(
            f"egress 32 tunnels at once: {sum(totals) / 2**20:.0f} MiB in {seconds:.2f} s = "
            f"{sum(totals) / 2**20 / seconds:.0f} MiB/s"
        )
    finally:
        await proxy.aclose()
        server.close()
        await asyncio.to_thread(folder.rmdir)


def run() -> None:
    configure_logging(logging.WARNING)  # the figures, not one log line per tunnel
    asyncio.run(_run())


if __name__ == "__main__":
    run()
