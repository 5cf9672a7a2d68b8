"""Sandbox egress: the proxy's policies, the proxy on a real unix socket, and confined sandboxes
using it. Nothing leaves 127.0.0.1: "registries" and "public hosts" are names an injected
resolver maps to local test servers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.server
import io
import json
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from fragments.config import Settings
from fragments.hostport import parse_registry_hosts, split_host_port
from fragments.sandbox.local.build import build_template
from fragments.sandbox.local.confine import bwrap_command
from fragments.sandbox.local.egress import (
    EgressLimits,
    EgressPolicy,
    EgressProxy,
    Refused,
    Upstream,
    Upstreams,
    blocked_reason,
    is_this_host,
    registries_policy,
)
from fragments.sandbox.local.install import install_npm_packages, pip_confinement
from fragments.sandbox.local.node_build import node_template_dir
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.templates import TEMPLATES
from fragments.schemas import Fragment, InterpreterResult, WebResult

from .conftest import fragment
from .test_deps import _wheel

pytestmark = pytest.mark.anyio

BLOCKED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:7f00:1": "loopback",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "169.254.169.254": "link-local",
    "::ffff:169.254.169.254": "link-local",
    "10.0.0.1": "private",
    "10.255.255.255": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.0.1": "private",
    "192.168.255.255": "private",
    "::ffff:10.1.2.3": "private",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "fe80::1": "link-local",
    "febf::1": "link-local",
    "100.64.0.1": "carrier-grade NAT",
    "100.127.255.254": "carrier-grade NAT",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.1": "documentation",
    "2001:db8::1": "documentation",
    # IPv4 inside IPv6: 6to4 and NAT64 of loopback/private addresses.
    "2002:7f00:1::1": "loopback",
    "64:ff9b::a00:1": "private",
    "2001:0:4136:e378::1": "reserved",
}
PUBLIC = [
    "93.184.216.34",
    "1.1.1.1",
    "172.32.0.1",
    "100.128.0.1",
    "192.169.0.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize(("address", "why"), BLOCKED.items())
def test_every_non_public_range_is_blocked(address: str, why: str) -> None:
    assert blocked_reason(address) == why


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(address) is None


def test_this_machines_own_addresses_are_recognized() -> None:
    """Its public address passes the range checks but must be refused too (the app or a
    database may listen on all interfaces)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.7", 9))  # a route lookup: UDP connect sends nothing
        except OSError:
            pytest.skip("this machine has no IPv4 route to find its own address with")
        own = probe.getsockname()[0]
    assert is_this_host(own)
    assert is_this_host("127.0.0.1")
    assert not is_this_host("198.51.100.7")


def test_registries_allow_only_their_hosts_and_ports() -> None:
    policy = registries_policy(
        ["registry.internal:8443", "mirror.example"], ["http://127.0.0.1:3141/simple", None]
    )
    for host, port in [
        ("pypi.org", 443),
        ("files.pythonhosted.org", 443),
        ("registry.npmjs.org", 443),
        ("registry.internal", 8443),
        ("mirror.example", 443),
        ("127.0.0.1", 3141),
    ]:
        policy.check_target(host, port)
    for host, port in [
        ("pypi.org", 80),
        ("pypi.org", 22),
        ("evil.example", 443),
        ("pypi.org.evil.example", 443),
        ("registry.internal", 443),
        ("127.0.0.1", 5432),
        ("127.0.0.1", 443),
    ]:
        with pytest.raises(Refused, match="not a package registry"):
            policy.check_target(host, port)


def test_target_names_are_normalized() -> None:
    assert split_host_port("PyPI.ORG.:443", None) == ("pypi.org", 443)
    assert split_host_port("[::FFFF:127.0.0.1]:80", None) == ("::ffff:7f00:1", 80)
    assert split_host_port("registry.internal", 443) == ("registry.internal", 443)
    for bad in ["pypi.org", "pypi.org:0", "pypi.org:99999", "a b:443", "[::1:443", "x:y"]:
        with pytest.raises(ValueError, match=r"not|needed"):
            split_host_port(bad, None)


def test_internet_refuses_names_resolving_to_private_addresses() -> None:
    policy = EgressPolicy("internet")
    policy.check_target("example.com", 443)
    policy.check_target("example.com", 8080)
    policy.check_addresses("example.com", ["93.184.216.34", "2606:2800:220:1::1"])
    for addresses in (["10.0.0.5"], ["93.184.216.34", "127.0.0.1"], ["::ffff:192.168.1.1"]):
        with pytest.raises(Refused, match=r"^example\.com \("):
            policy.check_addresses("example.com", addresses)
    with pytest.raises(Refused, match="mail"):
        policy.check_target("smtp.example.com", 25)


def test_registry_hosts_setting_is_validated() -> None:
    assert parse_registry_hosts("a.example, b.example:8443  c.example") == [
        "a.example",
        "b.example:8443",
        "c.example",
    ]
    settings = Settings(_env_file=None, sandbox_registry_hosts="a.example , b.example:8443")
    assert settings.sandbox_registry_hosts == "a.example,b.example:8443"
    with pytest.raises(ValidationError):
        Settings(_env_file=None, sandbox_registry_hosts="https://a.example/")


def test_no_proxy_bypasses_the_upstream() -> None:
    upstream = Upstream("127.0.0.1", 3128)
    ups = Upstreams(https=upstream, proxies={"https": "x", "no": "internal.example,.corp:8080"})
    assert ups.for_target("pypi.org", tunnel=True) == upstream
    assert ups.for_target("internal.example", tunnel=True) is None
    assert ups.for_target("a.internal.example", tunnel=True) is None
    assert ups.for_target("x.corp", tunnel=True) is None
    assert ups.for_target("pypi.org", tunnel=False) is None  # no HTTP_PROXY
    assert Upstream.from_url("http://u:p%40ss@proxy.corp:8080") == Upstream(
        "proxy.corp", 8080, "Basic dTpwQHNz"
    )


# ---- the proxy on a real unix socket -----------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="egress-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def upper_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(1024):
            writer.write(data.upper())
            await writer.drain()
    await close(writer)


class FakeResolver:
    """Maps names to addresses; counts lookups (a second one would allow DNS rebinding)."""

    def __init__(self, names: dict[str, list[list[str]]]) -> None:
        self.names = names
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.names.get(host)
        if not answers:
            raise OSError(f"unknown host {host}")
        return answers.pop(0) if len(answers) > 1 else answers[0]


@contextlib.asynccontextmanager
async def running(proxy: EgressProxy) -> AsyncIterator[EgressProxy]:
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.aclose()


async def ask(
    path: Path, request: bytes
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a request to the proxy; its response head and the open connection."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return head, reader, writer


async def test_connect_to_an_allowed_registry_tunnels_bytes(short_dir: Path) -> None:
    async with tcp_server(upper_echo) as port:
        resolver = FakeResolver({"registry.test": [["127.0.0.1"]]})
        policy = registries_policy([f"registry.test:{port}"])
        proxy = EgressProxy(policy, short_dir / "p.sock", resolver=resolver, upstreams=Upstreams())
        async with running(proxy):
            head, reader, writer = await ask(
                proxy.path, f"CONNECT registry.test:{port} HTTP/1.1\r\n\r\nearly ".encode()
            )
            assert head.startswith(b"HTTP/1.1 200 ")
            writer.write(b"bytes")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == b"EARLY BYTES"
            await close(writer)
    assert resolver.calls == ["registry.test"]


async def test_a_host_off_the_list_gets_403_with_a_reason(short_dir: Path) -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(100))
        await close(writer)

    async with tcp_server(record) as port:
        resolver = FakeResolver({"evil.test": [["127.0.0.1"]]})
        proxy = EgressProxy(
            registries_policy(), short_dir / "p.sock", resolver=resolver, upstreams=Upstreams()
        )
        async with running(proxy):
            for target in (f"evil.test:{port}", f"127.0.0.1:{port}", "pypi.org:80"):
                head, reader, writer = await ask(
                    proxy.path, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode()
                )
                assert head.startswith(b"HTTP/1.1 403 ")
                body = await reader.read()
                assert body.endswith(b"is not a package registry\n")
                assert body.count(b"\n") == 1
                await close(writer)
            # A plain request to a forbidden host is refused the same way.
            head, reader, writer = await ask(
                proxy.path, f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n".encode()
            )
            assert head.startswith(b"HTTP/1.1 403 ")
            await close(writer)
    assert seen == []
    assert resolver.calls == []


async def test_oversized_headers_and_garbage_are_refused(short_dir: Path) -> None:
    proxy = EgressProxy(
        registries_policy(),
        short_dir / "p.sock",
        resolver=FakeResolver({}),
        upstreams=Upstreams(),
        limits=EgressLimits(max_header_bytes=4096),
    )
    async with running(proxy):
        big = b"CONNECT pypi.org:443 HTTP/1.1\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n"
        head, _, writer = await ask(proxy.path, big)
        assert head.startswith(b"HTTP/1.1 431 ")
        await close(writer)
        for request in (
            b"GET / HTTP/1.1\r\n\r\n",
            b"hello\r\n\r\n",
            b"GET ftp://x/ HTTP/1.1\r\n\r\n",
            # A bare LF would let a header smuggle another one (e.g. Host) to the registry.
            b"GET http://pypi.org:443/ HTTP/1.1\r\nX-A: 1\nHost: evil.example\r\n\r\n",
        ):
            head, _, writer = await ask(proxy.path, request)
            assert head.startswith(b"HTTP/1.1 400 ")
            await close(writer)


async def test_internet_refuses_loopback_and_private_targets(short_dir: Path) -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(100))
        await close(writer)

    async with tcp_server(record) as port:
        resolver = FakeResolver(
            {
                "localhost": [["127.0.0.1"]],
                "sneaky.test": [["127.0.0.1"]],
                "metadata.test": [["169.254.169.254"]],
                "mixed.test": [["93.184.216.34", "10.0.0.1"]],
            }
        )
        proxy = EgressProxy(
            EgressPolicy("internet"), short_dir / "p.sock", resolver=resolver, upstreams=Upstreams()
        )
        async with running(proxy):
            for target, why in [
                (f"localhost:{port}", b"loopback"),
                (f"sneaky.test:{port}", b"loopback"),
                (f"127.0.0.1:{port}", b"loopback"),
                (f"[::ffff:127.0.0.1]:{port}", b"loopback"),
                (f"0.0.0.0:{port}", b"unspecified"),
                ("metadata.test:80", b"link-local"),
                ("mixed.test:443", b"private"),
            ]:
                head, reader, writer = await ask(
                    proxy.path, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode()
                )
                assert head.startswith(b"HTTP/1.1 403 "), target
                assert why in await reader.read(), target
                await close(writer)
            head, _, writer = await ask(
                proxy.path, f"GET http://sneaky.test:{port}/ HTTP/1.1\r\n\r\n".encode()
            )
            assert head.startswith(b"HTTP/1.1 403 ")
            await close(writer)
    assert seen == []


async def test_plain_http_is_forwarded_in_origin_form(short_dir: Path) -> None:
    requests: list[bytes] = []

    async def http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        await close(writer)

    async with tcp_server(http_server) as port:
        resolver = FakeResolver({"registry.test": [["127.0.0.1"]]})
        proxy = EgressProxy(
            registries_policy([], [f"http://registry.test:{port}/simple"]),
            short_dir / "p.sock",
            resolver=resolver,
            upstreams=Upstreams(),
        )
        async with running(proxy):
            head, reader, writer = await ask(
                proxy.path,
                f"GET http://registry.test:{port}/simple/x/?a=1 HTTP/1.1\r\n"
                "Host: elsewhere\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n".encode(),
            )
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert await reader.read() == b"ok"
            await close(writer)
    assert requests == [
        f"GET /simple/x/?a=1 HTTP/1.1\r\nHost: registry.test:{port}\r\nAccept: */*\r\n"
        "Connection: close\r\n\r\n".encode()
    ]


async def test_connects_are_chained_through_the_hosts_proxy(short_dir: Path) -> None:
    """With HTTPS_PROXY set for the app, CONNECTs go through it: by name for registries, by the
    vetted address for internet (the name is looked up once and never again)."""
    heads: list[bytes] = []

    async def upstream_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        await upper_echo(reader, writer)

    async with tcp_server(upstream_proxy) as port:
        upstreams = Upstreams(https=Upstream("127.0.0.1", port, "Basic abc"), proxies={})
        resolver = FakeResolver({"public.test": [["93.184.216.34"], ["127.0.0.1"]]})
        registries = EgressProxy(
            registries_policy(), short_dir / "r.sock", resolver=resolver, upstreams=upstreams
        )
        internet = EgressProxy(
            EgressPolicy("internet"), short_dir / "i.sock", resolver=resolver, upstreams=upstreams
        )
        async with running(registries), running(internet):
            for proxy, target in ((registries, "pypi.org:443"), (internet, "public.test:443")):
                head, reader, writer = await ask(
                    proxy.path, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode()
                )
                assert head.startswith(b"HTTP/1.1 200 ")
                writer.write(b"tls bytes")
                writer.write_eof()
                assert await reader.read() == b"TLS BYTES"
                await close(writer)
    assert [h.split(b"\r\n")[0] for h in heads] == [
        b"CONNECT pypi.org:443 HTTP/1.1",
        b"CONNECT 93.184.216.34:443 HTTP/1.1",
    ]
    assert all(b"Proxy-Authorization: Basic abc" in h for h in heads)
    assert resolver.calls == ["public.test"]  # registries by name through the upstream


async def test_connections_per_sandbox_and_idle_tunnels_are_bounded(short_dir: Path) -> None:
    async with tcp_server(upper_echo) as port:
        resolver = FakeResolver({"registry.test": [["127.0.0.1"]]})
        proxy = EgressProxy(
            registries_policy([f"registry.test:{port}"]),
            short_dir / "p.sock",
            resolver=resolver,
            upstreams=Upstreams(),
            limits=EgressLimits(per_peer=1, header_timeout=0.5, idle_timeout=0.5),
        )
        request = f"CONNECT registry.test:{port} HTTP/1.1\r\n\r\n".encode()
        async with running(proxy):
            head, reader, writer = await ask(proxy.path, request)
            assert head.startswith(b"HTTP/1.1 200 ")
            # The same uid's second connection waits for the first, then is refused.
            second, _, second_writer = await ask(proxy.path, request)
            assert second.startswith(b"HTTP/1.1 503 ")
            await close(second_writer)
            # The idle tunnel is closed by the proxy.
            assert await asyncio.wait_for(reader.read(), 10) == b""
            await close(writer)
            # Its slot is free again.
            third, _, third_writer = await ask(proxy.path, request)
            assert third.startswith(b"HTTP/1.1 200 ")
            await close(third_writer)


# ---- confined sandboxes ------------------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[tuple[str, list[str]]]:
    """A PEP 503 index on the host's loopback serving one hand-made wheel: (index URL, paths)."""
    folder = Path(tempfile.mkdtemp(prefix="fragments-registry-"))
    wheel = _wheel(folder, "fragments-probe", "1.0", "VALUE = 'from-registry'\n")
    project = folder / "simple" / "fragments-probe"
    project.mkdir(parents=True)
    (project / "index.html").write_text(
        f'<html><body><a href="../../{wheel.name}">{wheel.name}</a></body></html>'
    )
    paths: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            paths.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple", paths
    server.shutdown()
    thread.join()
    server.server_close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def registry_service(
    sandbox_settings: Settings, registry: tuple[str, list[str]]
) -> AsyncIterator[LocalSandboxService]:
    # The index URL's host:port is on the registries list by itself (an operator's registry).
    svc = LocalSandboxService(
        sandbox_settings.model_copy(update={"sandbox_pip_index": registry[0]})
    )
    try:
        yield svc
    finally:
        await svc.aclose()


async def test_an_install_reaches_the_registry_only_through_the_proxy(
    registry_service: LocalSandboxService, registry: tuple[str, list[str]]
) -> None:
    _, paths = registry
    result = await registry_service.execute(
        fragment(
            "import fragments_probe; print(fragments_probe.VALUE)",
            additional_dependencies=["fragments-probe==1.0"],
        ),
        owner="conv-registry",
    )
    assert isinstance(result, InterpreterResult)
    assert result.error is None, result.error
    assert result.stdout == ["from-registry\n"]
    assert "/simple/fragments-probe/" in paths
    missing = await registry_service.execute(
        fragment("print('never')", additional_dependencies=["no-such-package-xyz"]),
        owner="conv-registry",
    )
    assert isinstance(missing, InterpreterResult)
    assert missing.error is not None
    assert missing.error.name == "InstallError"
    assert "no-such-package-xyz" in missing.error.value


INSTALL_PROBE = """
import os, socket, sys
port, hostport = int(sys.argv[1]), int(sys.argv[2])
def attempt(label, fn):
    try:
        print(label, 'OK', fn())
    except Exception as e:
        print(label, 'FAILED', type(e).__name__)
def direct(host):
    return lambda: socket.create_connection((host, hostport), timeout=2).close()
def via_proxy(target):
    def go():
        s = socket.create_connection(('127.0.0.1', 3128), timeout=5)
        s.sendall(f'CONNECT {target} HTTP/1.1\\r\\n\\r\\n'.encode())
        return s.recv(200).split(b'\\r\\n')[0].decode()
    return go
attempt('direct-loopback', direct('127.0.0.1'))
attempt('direct-localhost', direct('localhost'))
attempt('direct-private', lambda: socket.create_connection(('10.0.0.1', 80), timeout=2).close())
attempt('dns', lambda: socket.getaddrinfo('pypi.org', 443))
attempt('proxy-host-server', via_proxy(f'127.0.0.1:{hostport}'))
attempt('proxy-postgres', via_proxy('127.0.0.1:5432'))
attempt('proxy-registry', via_proxy(f'127.0.0.1:{port}'))
print('proxy env', os.environ.get('HTTPS_PROXY'))
"""


async def test_an_install_sandbox_cannot_reach_the_hosts_loopback(
    registry_service: LocalSandboxService,
    registry: tuple[str, list[str]],
    host_server: tuple[int, list[str]],
) -> None:
    """The install's own confinement, running a probe instead of uv."""
    config = await registry_service._setup()
    installer = registry_service.host.installer if registry_service.host else None
    assert installer is not None
    env = registry_service.envs.find(TEMPLATES["code-interpreter-v1"])
    assert env is not None
    root = config.run_root / "install-probe"
    root.mkdir(mode=0o711)
    confinement, _ = pip_confinement(
        root=root, deps=root / "deps", env=env, config=config, installer=installer
    )
    registry_port = registry[0].split(":")[2].split("/")[0]
    hostport, seen = host_server
    command = bwrap_command(
        confinement, [str(env.python), "-c", INSTALL_PROBE, registry_port, str(hostport)]
    )
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    for label in ("direct-loopback", "direct-localhost", "direct-private", "dns"):
        assert f"{label} FAILED" in out, out
    assert "proxy-host-server OK HTTP/1.1 403 Forbidden" in out, out
    assert "proxy-postgres OK HTTP/1.1 403 Forbidden" in out, out
    assert "proxy-registry OK HTTP/1.1 200 Connection established" in out, out
    assert "proxy env http://127.0.0.1:3128" in out
    assert seen == []


@pytest.fixture
async def internet_service(sandbox_settings: Settings) -> AsyncIterator[LocalSandboxService]:
    svc = LocalSandboxService(sandbox_settings.model_copy(update={"sandbox_egress": "internet"}))
    try:
        yield svc
    finally:
        await svc.aclose()


async def test_code_with_internet_egress_still_cannot_reach_the_host(
    internet_service: LocalSandboxService, host_server: tuple[int, list[str]]
) -> None:
    port, seen = host_server
    code = f"""
import os, socket
def attempt(label, fn):
    try:
        print(label, 'OK', fn())
    except Exception as e:
        print(label, 'FAILED', type(e).__name__)
def via_proxy(target, method='CONNECT'):
    def go():
        s = socket.create_connection(('127.0.0.1', 3128), timeout=5)
        s.sendall(f'{{method}} {{target}} HTTP/1.1\\r\\n\\r\\n'.encode())
        return s.recv(300).decode().replace('\\r\\n', ' | ')
    return go
attempt('direct', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2).close())
attempt('direct-private', lambda: socket.create_connection(('10.0.0.1', 80), timeout=2).close())
attempt('http-loopback', via_proxy('http://127.0.0.1:{port}/', 'GET'))
attempt('http-localhost', via_proxy('http://localhost:{port}/x', 'GET'))
print('proxy env', os.environ['HTTPS_PROXY'], repr(os.environ['NO_PROXY']))
for target in ['127.0.0.1:{port}', 'localhost:{port}', '[::ffff:127.0.0.1]:{port}',
               '169.254.169.254:80', '10.0.0.1:443', '0.0.0.0:{port}', '[::1]:6379']:
    attempt('connect ' + target, via_proxy(target))
"""
    result = await internet_service.execute(fragment(code), owner="conv-internet")
    assert isinstance(result, InterpreterResult)
    assert result.error is None, result.error
    out = "".join(result.stdout)
    assert "direct FAILED" in out, out
    assert "direct-private FAILED" in out, out
    assert "127.0.0.1 is a loopback address" in out, out
    assert "localhost (127.0.0.1) is a loopback address" in out, out
    assert "169.254.169.254 is a link-local address" in out, out
    assert out.count("OK HTTP/1.1 403 Forbidden") == 9, out
    assert "proxy env http://127.0.0.1:3128 'localhost,127.0.0.1,::1'" in out, out
    assert " 200 " not in out
    assert seen == []


async def test_a_web_app_with_internet_egress_starts_and_keeps_localhost_direct(
    internet_service: LocalSandboxService,
) -> None:
    """Gradio checks its own server over HTTP on 127.0.0.1 while launching: with the proxy
    variables set, that check must stay off the proxy (NO_PROXY), or the app never starts."""
    build_template(internet_service.settings, "gradio-developer")
    code = (
        "import os\n"
        "import gradio as gr\n"
        "demo = gr.Interface(fn=lambda s: s, inputs='text', outputs='text',"
        " title='via ' + os.environ['HTTPS_PROXY'])\n"
    )
    result = await internet_service.execute(
        Fragment.model_validate({"template": "gradio-developer", "code": code}), owner="conv-web"
    )
    assert isinstance(result, WebResult)
    assert result.error is None, result.error
    assert result.sandbox_id is not None
    sock = internet_service.preview_socket(result.sandbox_id, 7860)
    assert sock is not None
    transport = httpx.AsyncHTTPTransport(uds=str(sock))
    async with httpx.AsyncClient(transport=transport, timeout=10) as http:
        page = await http.get("http://127.0.0.1:7860/")
    assert page.status_code == 200
    assert "via http://127.0.0.1:3128" in page.text


def _npm_package(folder: Path, name: str, version: str, base: str) -> dict[str, object]:
    """A tarball and its packument (registry metadata) for a one-file npm package."""
    files = {
        "package/package.json": json.dumps({"name": name, "version": version, "main": "index.js"}),
        "package/index.js": "module.exports = 'from-npm-registry';\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    tarball = buffer.getvalue()
    tgz = f"{name}-{version}.tgz"
    (folder / tgz).write_bytes(tarball)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    dist = {
        "tarball": f"{base}/{tgz}",
        "shasum": hashlib.sha1(tarball).hexdigest(),
        "integrity": integrity,
    }
    return {
        "name": name,
        "dist-tags": {"latest": version},
        "versions": {version: {"name": name, "version": version, "dist": dist}},
    }


@pytest.fixture
def npm_registry() -> Iterator[tuple[str, list[str]]]:
    """An npm registry on the host's loopback with one package: (registry URL, paths asked)."""
    folder = Path(tempfile.mkdtemp(prefix="fragments-npm-"))
    paths: list[str] = []
    packuments: dict[str, bytes] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            paths.append(self.path)
            body = packuments.get(self.path.strip("/"))
            if body is None:
                super().do_GET()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    name = "fragments-probe-npm"
    packuments[name] = json.dumps(_npm_package(folder, name, "1.0.0", base)).encode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"{base}/", paths
    server.shutdown()
    thread.join()
    server.server_close()
    shutil.rmtree(folder, ignore_errors=True)


async def test_an_npm_install_reaches_its_registry_through_the_proxy(
    sandbox_settings: Settings,
    npm_registry: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """npm's proxy settings point at the egress proxy, and the operator's npm registry (from
    npm_config_registry) is on the registries list by itself."""
    url, paths = npm_registry
    svc = LocalSandboxService(sandbox_settings)
    template = TEMPLATES["nextjs-developer"]
    if node_template_dir(svc.settings, template.id, gid=svc.node_gid) is None:
        # A fresh machine: build it once (npm ci; cached for later runs) rather than skip. The
        # build takes its packages from the real registry, so the test's registry comes after.
        await asyncio.to_thread(svc.envs.build, template)
    monkeypatch.setenv("npm_config_registry", url)
    try:
        config = await svc._setup()
        installer = svc.host.installer if svc.host else None
        assert installer is not None
        env = svc.envs.find(template)
        assert env is not None
        sandbox = await svc._acquire(None, env, False, config)
        assert isinstance(sandbox, WebSandbox)
        assert (
            await sandbox.write_files([("pages/index.tsx", "export default () => null\n")]) is None
        )
        error = await install_npm_packages(
            sandbox_id=sandbox.id,
            root=sandbox.root,
            project=sandbox.merged,
            env=sandbox.env,
            gid=svc.node_gid,
            packages=["fragments-probe-npm@1.0.0"],
            config=config,
            installer=installer,
        )
        assert error is None, error
        installed = sandbox.merged / "node_modules" / "fragments-probe-npm" / "index.js"
        assert installed.read_text() == "module.exports = 'from-npm-registry';\n"
        assert "/fragments-probe-npm" in paths
    finally:
        await svc.aclose()
