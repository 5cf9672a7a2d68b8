"""The egress proxy server: one policy on one unix socket; each connection carries one request
(a tunnel or a plain HTTP request), vetted, connected directly or through the app's own proxy,
then relayed both ways with size, connection and idle bounds."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from fragments.sandbox.local.egress.addresses import is_this_host
from fragments.sandbox.local.egress.http_head import (
    BadProxyRequest,
    ProxyRequest,
    parse_head,
    refusal,
)
from fragments.sandbox.local.egress.policy import EgressPolicy, Refused, show_target
from fragments.sandbox.local.egress.upstream import Upstream, Upstreams

log = structlog.get_logger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the host's resolver gives for `host` (one lookup, answers deduplicated)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class EgressLimits:
    max_header_bytes: int = 16 * 1024
    max_connections: int = 512
    # Per sandbox uid (every install shares the installer's uid).
    per_peer: int = 64
    header_timeout: float = 15.0
    connect_timeout: float = 15.0
    idle_timeout: float = 120.0


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class EgressProxy:
    """One policy served on one unix socket (see the module docstring)."""

    def __init__(
        self,
        policy: EgressPolicy,
        path: Path,
        *,
        resolver: Resolver = system_resolver,
        upstreams: Upstreams | None = None,
        limits: EgressLimits | None = None,
    ) -> None:
        self.policy = policy
        self.path = path
        self.resolver = resolver
        self.upstreams = upstreams if upstreams is not None else Upstreams.from_environment()
        self.limits = limits or EgressLimits()
        self.active = 0
        self._peers: dict[int | None, asyncio.Semaphore] = {}
        self._server: asyncio.Server | None = None
        # Open connections (both ends) and their handlers, so that closing ends them cleanly.
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on the socket, connectable by every sandbox uid."""
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(
            self.handle, path=str(self.path), limit=self.limits.max_header_bytes
        )
        self.path.chmod(0o666)

    async def aclose(self) -> None:
        """Stop listening and end every open connection (its handler then returns normally)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self.path.unlink(missing_ok=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection: its single request, then the tunnel or response."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._open.add(writer)
        try:
            await self._handle(reader, writer)
        finally:
            self._open.discard(writer)
            if task is not None:
                self._handlers.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.limits.max_connections:
            log.warning("sandbox_egress_refused", policy=self.policy.mode, reason="busy")
            await self._close(writer)
            return
        self.active += 1
        peer = _peer_uid(writer)
        slots = self._peers.setdefault(peer, asyncio.Semaphore(self.limits.per_peer))
        try:
            # Over its share a sandbox waits (npm and uv open many connections at once).
            await asyncio.wait_for(slots.acquire(), self.limits.header_timeout)
        except TimeoutError:
            self.active -= 1
            await self._reply(writer, 503, "too many connections from this sandbox", peer)
            await self._close(writer)
            return
        try:
            await self._serve(reader, writer, peer)
        except Exception:
            log.exception("sandbox_egress_failed", policy=self.policy.mode, peer_uid=peer)
        finally:
            slots.release()
            self.active -= 1
            await self._close(writer)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: int | None
    ) -> None:
        limits = self.limits
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limits.header_timeout)
        except (asyncio.LimitOverrunError, ValueError):
            await self._reply(writer, 431, "request headers are too large", peer)
            return
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            return
        try:
            request = parse_head(head)
        except BadProxyRequest as exc:
            await self._reply(writer, exc.status, str(exc), peer)
            return
        try:
            self.policy.check_target(request.host, request.port)
            upstream = self.upstreams.for_target(request.host, tunnel=request.tunnel)
            target = request.host
            addresses: list[str] = []
            if upstream is None or self.policy.mode == "internet":
                addresses = await self._resolve(request.host, request.port)
                self.policy.check_addresses(request.host, addresses)
                if self.policy.mode == "internet" and any(map(is_this_host, addresses)):
                    raise Refused(f"{request.host} is this machine")
            if upstream is not None:
                if self.policy.mode == "internet":
                    target = addresses[0]
                remote = await self._via_upstream(upstream, request, target)
            else:
                remote = await self._connect(addresses, request.port)
        except Refused as exc:
            await self._reply(writer, 403, str(exc), peer, request)
            return
        except (OSError, TimeoutError) as exc:
            target_shown = show_target(request.host, request.port)
            reason = f"cannot reach {target_shown}: {exc or type(exc).__name__}"
            await self._reply(writer, 502, reason, peer, request)
            return
        up_reader, up_writer = remote
        self._open.add(up_writer)
        try:
            if request.tunnel:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            elif upstream is None:
                up_writer.write(request.head())
            sent, received = await self._relay(reader, writer, up_reader, up_writer)
        finally:
            await self._close(up_writer)
        log.info(
            "sandbox_egress",
            policy=self.policy.mode,
            host=request.host,
            port=request.port,
            peer_uid=peer,
            sent=sent,
            received=received,
        )

    async def _resolve(self, host: str, port: int) -> list[str]:
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]  # a literal address needs no lookup
        try:
            addresses = await asyncio.wait_for(
                self.resolver(host, port), self.limits.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise Refused(f"{host} cannot be resolved") from exc
        if not addresses:
            raise Refused(f"{host} cannot be resolved")
        return addresses

    async def _connect(
        self, addresses: list[str], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # Vetted literal addresses only: nothing is looked up again.
        error: BaseException = OSError("no address")
        for address in addresses:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(address, port), self.limits.connect_timeout
                )
            except (OSError, TimeoutError) as exc:
                error = exc
        raise error

    async def _via_upstream(
        self, upstream: Upstream, request: ProxyRequest, target: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect through the app's own proxy (CONNECT, or the absolute-form request)."""
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(
                upstream.host, upstream.port, limit=self.limits.max_header_bytes
            ),
            self.limits.connect_timeout,
        )
        auth = (
            f"Proxy-Authorization: {upstream.authorization}\r\n" if upstream.authorization else ""
        )
        if not request.tunnel:
            head = request.head(via=target)
            if auth:
                head = head.replace(b"\r\n", f"\r\n{auth}".encode(), 1)
            up_writer.write(head)
            return up_reader, up_writer
        authority = show_target(target, request.port)
        up_writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n".encode())
        try:
            reply = await asyncio.wait_for(
                up_reader.readuntil(b"\r\n\r\n"), self.limits.connect_timeout
            )
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            await self._close(up_writer)
            raise OSError("the upstream proxy gave no answer") from exc
        status = reply.split(b" ", 2)[1] if reply.count(b" ") >= 2 else b""
        if status != b"200":
            await self._close(up_writer)
            raise OSError(f"the upstream proxy answered {status.decode(errors='replace')}")
        return up_reader, up_writer

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        remote_reader: asyncio.StreamReader,
        remote_writer: asyncio.StreamWriter,
    ) -> tuple[int, int]:
        """Copy both ways until both ends are done or nothing moved for the idle time."""
        loop = asyncio.get_running_loop()
        idle = self.limits.idle_timeout
        last = [loop.time()]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> int:
            count = 0
            while True:
                try:
                    data = await asyncio.wait_for(src.read(65536), idle)
                except TimeoutError:
                    if loop.time() - last[0] >= idle:
                        raise
                    continue  # the other direction is busy (e.g. a long download)
                if not data:
                    break
                last[0] = loop.time()
                dst.write(data)
                await asyncio.wait_for(dst.drain(), idle)
                count += len(data)
            if dst.can_write_eof():
                with contextlib.suppress(OSError):
                    dst.write_eof()
            return count

        up = asyncio.ensure_future(pump(client_reader, remote_writer))
        down = asyncio.ensure_future(pump(remote_reader, client_writer))
        try:
            done, _ = await asyncio.wait((up, down), return_when=asyncio.FIRST_EXCEPTION)
            if any(task.exception() is not None for task in done):
                return 0, 0
        finally:
            for task in (up, down):
                if not task.done():
                    task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
        return up.result(), down.result()

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        reason: str,
        peer: int | None,
        request: ProxyRequest | None = None,
    ) -> None:
        log.warning(
            "sandbox_egress_refused",
            policy=self.policy.mode,
            status=status,
            host=request.host if request else None,
            port=request.port if request else None,
            peer_uid=peer,
            reason=reason,
        )
        with contextlib.suppress(OSError):
            writer.write(refusal(status, reason))
            await asyncio.wait_for(writer.drain(), 5)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2)
