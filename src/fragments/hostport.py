"""Host names and `host[:port]` entries as the settings and the sandbox's egress proxy read them
(FRAGMENTS_SANDBOX_REGISTRY_HOSTS is checked at start-up, so this sits below both)."""

from __future__ import annotations

import contextlib
import ipaddress
import re

_HOST = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?$")


def normalize_host(host: str) -> str:
    """Lower-case, no trailing dot, no IPv6 brackets; ValueError when it is no host name."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    if not _HOST.match(host) or ".." in host:
        raise ValueError(f"not a host name: {host[:80]!r}")
    return host


def split_host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` -> (host, port); ValueError when malformed."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"not host[:port]: {text[:80]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"not host[:port]: {text[:80]!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if port_text:
        if not port_text.isdigit():
            raise ValueError(f"not a port: {port_text[:10]!r}")
        port = int(port_text)
    elif default_port is None:
        raise ValueError(f"a port is needed: {text[:80]!r}")
    else:
        port = default_port
    if not 0 < port < 65536:
        raise ValueError(f"not a port: {port}")
    return normalize_host(host), port


def parse_registry_hosts(value: str) -> list[str]:
    """FRAGMENTS_SANDBOX_REGISTRY_HOSTS: comma- or space-separated `host` / `host:port`."""
    entries = [e for e in re.split(r"[,\s]+", value) if e]
    for entry in entries:
        split_host_port(entry, 443)  # raises ValueError on a malformed entry
    return entries
