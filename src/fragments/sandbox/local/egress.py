"""Sandbox egress: an HTTP forward proxy on the app side, reached through a unix socket.

Sandboxes live in network namespaces of their own with nothing but a loopback. When a sandbox
may reach the outside (installs always, running code only with FRAGMENTS_SANDBOX_EGRESS=internet)
socat inside it listens on 127.0.0.1:3128 and forwards to this proxy's socket, bound into the
sandbox; HTTP(S)_PROXY point there. The proxy accepts `CONNECT host:port` (and plain-HTTP
absolute-URI requests, for an operator's http:// registry) and applies one policy:

- `registries`: only allowlisted (host, port) pairs: PyPI and npm, the hosts of the configured
  indexes, and FRAGMENTS_SANDBOX_REGISTRY_HOSTS. The operator's list is trusted as is, so a
  registry on a private address works.
- `internet`: any host, but the proxy resolves the name itself, refuses when any address is
  loopback, private, link-local, CGNAT, multicast, unspecified or otherwise reserved (IPv4 and
  IPv6, IPv4 embedded in IPv6 included) or this machine's own (its public address, where the app
  or a database may listen on all interfaces), and connects to the vetted address: no second
  lookup, so a name cannot be rebound to a private address in between. Mail ports are refused.

A refusal answers 403 with a one-line reason and is logged. Raw sockets have no route out: egress
is HTTP(S) through this proxy only. Header size, connection count (in all and per sandbox uid,
read with SO_PEERCRED) and idle time are bounded. When the app itself must use a proxy
(HTTPS_PROXY / HTTP_PROXY in its environment, NO_PROXY honoured) requests are chained through it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import re
import socket
import struct
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import structlog

from fragments.hostport import normalize_host, split_host_port

log = structlog.get_logger(__name__)

Mode = Literal["registries", "internet"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Inside a sandbox: where the proxy's socket is bound and where socat serves it.
EGRESS_SOCKET = "/run/fragments-egress.sock"
EGRESS_PORT = 3128
DEFAULT_REGISTRIES = ("pypi.org", "files.pythonhosted.org", "registry.npmjs.org")
# Open relays for mail are the classic abuse of an egress proxy.
MAIL_PORTS = frozenset({25, 465, 587})
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


_V4_BLOCKED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_BLOCKED: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "reserved"),  # IPv4-compatible (deprecated)
    ("64:ff9b:1::/48", "private"),  # local-use NAT64
    ("100::/64", "reserved"),  # discard
    ("2001::/32", "reserved"),  # Teredo: a tunnel to an address we cannot vet
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "private"),  # unique local (RFC 4193)
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private"),  # site-local (deprecated)
    ("ff00::/8", "multicast"),
)
_V4_NETS = tuple((ipaddress.IPv4Network(n), why) for n, why in _V4_BLOCKED)
_V6_NETS = tuple((ipaddress.IPv6Network(n), why) for n, why in _V6_BLOCKED)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why code must not reach this address (loopback, private, ...), or None when public."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address carried in IPv6 is judged as that IPv4 address.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return blocked_reason(embedded)
        for net6, why in _V6_NETS:
            if ip in net6:
                return why
    else:
        for net4, why in _V4_NETS:
            if ip in net4:
                return why
    # Whatever else IANA marks as not globally reachable.
    return None if ip.is_global else "reserved"


def is_this_host(address: str) -> bool:
    """True when `address` is one of this machine's own (e.g. its public address, where the
    app or a database may listen on all interfaces). Asks the routing table with a UDP
    `connect`, which sends nothing: a local destination is routed with itself as the source."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 9))
            source = str(probe.getsockname()[0])
    except OSError:
        return False  # no route: the connection cannot reach anything either
    return ipaddress.ip_address(source.split("%")[0]) == ipaddress.ip_address(address)


class Refused(Exception):
    """The policy refuses a target; the message is the one-line reason sent back."""


def url_host_port(url: str) -> tuple[str, int] | None:
    """The (host, port) an http(s) index URL is fetched from; None for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return normalize_host(parts.hostname), port
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What one proxy lets through (see the module docstring)."""

    mode: Mode
    # (host, port) pairs for `registries`; unused by `internet`.
    allowed: frozenset[tuple[str, int]] = frozenset()

    def check_target(self, host: str, port: int) -> None:
        """Refuse by name and port, before any lookup."""
        if self.mode == "registries":
            if (host, port) not in self.allowed:
                raise Refused(f"{_show(host, port)} is not a package registry")
        elif port in MAIL_PORTS:
            raise Refused(f"port {port} (mail) is not allowed")

    def check_addresses(self, host: str, addresses: Iterable[str]) -> None:
        """Refuse when any address of the name is not public (`internet` only)."""
        if self.mode != "internet":
            return
        for address in addresses:
            why = blocked_reason(address)
            if why is not None:
                shown = host if host == address else f"{host} ({address})"
                article = "an" if why[0] in "aeiou" else "a"
                raise Refused(f"{shown} is {article} {why} address")


def registries_policy(
    extra_hosts: Iterable[str] = (), index_urls: Iterable[str | None] = ()
) -> EgressPolicy:
    """PyPI and npm on 443, the hosts of the given index URLs, and the operator's entries."""
    allowed = {(host, 443) for host in DEFAULT_REGISTRIES}
    for url in index_urls:
        if url:
            found = url_host_port(url)
            if found is not None:
                allowed.add(found)
    for entry in extra_hosts:
        allowed.add(split_host_port(entry, 443))
    return EgressPolicy("registries", frozenset(allowed))


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the host's resolver gives for `host` (one lookup, answers deduplicated)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class Upstream:
    """The proxy the app itself must use (from its environment)."""

    host: str
    port: int
    authorization: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Upstream | None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            log.warning("sandbox_egress_upstream_unsupported", scheme=parts.scheme)
            return None
        auth = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = "Basic " + base64.b64encode(pair.encode()).decode()
        return cls(parts.hostname, parts.port or 80, auth)


@dataclass(frozen=True, slots=True)
class Upstreams:
    """HTTPS_PROXY for CONNECT, HTTP_PROXY for plain requests, NO_PROXY for neither."""

    https: Upstream | None = None
    http: Upstream | None = None
    proxies: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> Upstreams:
        proxies = urllib.request.getproxies_environment()
        https = proxies.get("https")
        http = proxies.get("http")
        return cls(
            https=Upstream.from_url(https) if https else None,
            http=Upstream.from_url(http) if http else None,
            proxies=proxies,
        )

    def for_target(self, host: str, *, tunnel: bool) -> Upstream | None:
        upstream = self.https if tunnel else self.http
        if upstream is None or _bypassed(host, self.proxies.get("no", "")):
            return None
        return upstream


def _bypassed(host: str, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: `*`, or names matching a domain suffix (ports ignored)."""
    for entry in re.split(r"[,\s]+", no_proxy.lower()):
        entry = entry.strip().lstrip(".")
        if entry.startswith("[") and "]" in entry:
            entry = entry[1 : entry.index("]")]
        elif entry.count(":") == 1:
            entry = entry.split(":")[0]
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return True
    return False


@dataclass(frozen=True, slots=True)
class EgressLimits:
    max_header_bytes: int = 16 * 1024
    max_connections: int = 512
    # Per sandbox uid (every install shares the installer's uid).
    per_peer: int = 64
    header_timeout: float = 15.0
    connect_timeout: float = 15.0
    idle_timeout: float = 120.0


@dataclass(slots=True)
class _Request:
    tunnel: bool
    host: str
    port: int
    # Plain HTTP only: the request line's parts and the end-to-end headers.
    method: str = ""
    path: str = ""
    version: str = ""
    headers: list[str] = field(default_factory=list)

    def head(self, via: str | None = None) -> bytes:
        """The plain request: origin-form, or absolute-form to `via` (the vetted address)."""
        authority = _authority(self.host, self.port, 80)
        target = self.path if via is None else f"http://{_authority(via, self.port, 80)}{self.path}"
        lines = [f"{self.method} {target} {self.version}", f"Host: {authority}", *self.headers]
        # One request per connection: nothing can follow it to the same vetted address.
        return "\r\n".join([*lines, "Connection: close", "", ""]).encode("latin-1")


def _authority(host: str, port: int, default: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


_STATUS = {
    400: "Bad Request",
    403: "Forbidden",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "host",
}


def _parse_head(head: bytes) -> _Request:
    # A bare CR or LF (or another control byte) could split one forwarded header into two.
    if _CONTROL.search(head[:-4].replace(b"\r\n", b"")):
        raise _BadRequest(400, "control characters in the request head")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "not an HTTP/1 proxy request")
    method, target, version = parts
    if method == "CONNECT":
        try:
            host, port = split_host_port(target, None)
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from exc
        return _Request(tunnel=True, host=host, port=port)
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise _BadRequest(400, "only CONNECT and absolute http:// requests are proxied")
    try:
        host, port = normalize_host(url.hostname), url.port or 80
    except ValueError as exc:
        raise _BadRequest(400, str(exc)) from exc
    path = url.path or "/"
    if url.query:
        path += f"?{url.query}"
    headers = [
        line
        for line in lines[1:]
        if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP
    ]
    return _Request(
        tunnel=False,
        host=host,
        port=port,
        method=method,
        path=path,
        version=version,
        headers=headers,
    )


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


def _response(status: int, reason: str) -> bytes:
    body = (reason.replace("\r", " ").replace("\n", " ")[:300] + "\n").encode()
    return (
        f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


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
            request = _parse_head(head)
        except _BadRequest as exc:
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
            reason = (
                f"cannot reach {_show(request.host, request.port)}: {exc or type(exc).__name__}"
            )
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
        self, upstream: Upstream, request: _Request, target: str
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
        authority = _show(target, request.port)
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
        request: _Request | None = None,
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
            writer.write(_response(status, reason))
            await asyncio.wait_for(writer.drain(), 5)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2)


@dataclass(frozen=True, slots=True)
class SandboxEgress:
    """How a sandbox reaches one proxy: the bound socket, socat, and the proxy variables."""

    socket: Path
    # Running code keeps its own localhost off the proxy (Gradio checks its server that way);
    # an install has nothing local to reach.
    keep_local: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{EGRESS_PORT}"

    def bind(self) -> tuple[Path, str]:
        return self.socket, EGRESS_SOCKET

    def env(self) -> dict[str, str]:
        local = "localhost,127.0.0.1,::1" if self.keep_local else ""
        return {
            "HTTP_PROXY": self.url,
            "HTTPS_PROXY": self.url,
            "http_proxy": self.url,
            "https_proxy": self.url,
            "NO_PROXY": local,
            "no_proxy": local,
            "npm_config_proxy": self.url,
            "npm_config_https_proxy": self.url,
            "npm_config_noproxy": local,
        }

    def wrap(self, command: list[str]) -> list[str]:
        """Start socat on 127.0.0.1:3128 -> the bound socket, wait until it listens, then run."""
        listening = f"0100007F:{EGRESS_PORT:04X} 00000000:0000 0A"
        script = (
            f"socat TCP-LISTEN:{EGRESS_PORT},bind=127.0.0.1,reuseaddr,fork "
            f"UNIX-CONNECT:{EGRESS_SOCKET} </dev/null >/dev/null 2>&1 &\n"
            "i=0\n"
            f"while [ $i -lt 400 ] && ! grep -q '{listening}' /proc/net/tcp; do\n"
            "  sleep 0.005; i=$((i+1))\n"
            "done\n"
            'exec "$@"'
        )
        return ["/bin/sh", "-c", script, "sh", *command]


@dataclass(slots=True)
class EgressSetup:
    """The app's proxies and how installs and running code reach them."""

    installs: SandboxEgress
    code: SandboxEgress | None
    proxies: list[EgressProxy]

    async def start(self) -> None:
        for proxy in self.proxies:
            await proxy.start()

    async def aclose(self) -> None:
        for proxy in self.proxies:
            await proxy.aclose()


def egress_setup(
    folder: Path,
    *,
    mode: Literal["none", "internet"],
    registry_hosts: Iterable[str],
    index_urls: Iterable[str | None],
) -> EgressSetup:
    """A registries proxy for installs, and an internet one for code when enabled."""
    installs = folder / "egress-registries.sock"
    proxies = [EgressProxy(registries_policy(registry_hosts, index_urls), installs)]
    code: SandboxEgress | None = None
    if mode == "internet":
        path = folder / "egress-internet.sock"
        proxies.append(EgressProxy(EgressPolicy("internet"), path))
        code = SandboxEgress(path, keep_local=True)
    return EgressSetup(installs=SandboxEgress(installs), code=code, proxies=proxies)


def index_urls_from_environment() -> list[str | None]:
    """Index and registry URLs the installers take from the app's environment."""
    keys = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "npm_config_registry", "NPM_CONFIG_REGISTRY")
    return [os.environ.get(key) for key in keys]
