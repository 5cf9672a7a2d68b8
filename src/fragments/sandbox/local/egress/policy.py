"""What an egress proxy lets through: the allowlist of package registries, or the public internet
minus mail ports and non-public addresses; and parsing of host names, `host:port` and index URLs."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fragments.sandbox.local.egress.addresses import blocked_reason

Mode = Literal["registries", "internet"]

DEFAULT_REGISTRIES = ("pypi.org", "files.pythonhosted.org", "registry.npmjs.org")
# Open relays for mail are the classic abuse of an egress proxy.
MAIL_PORTS = frozenset({25, 465, 587})
_HOST = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?$")


class Refused(Exception):
    """The policy refuses a target; the message is the one-line reason sent back."""


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
                raise Refused(f"{show_target(host, port)} is not a package registry")
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


def parse_registry_hosts(value: str) -> list[str]:
    """FRAGMENTS_SANDBOX_REGISTRY_HOSTS: comma- or space-separated `host` / `host:port`."""
    entries = [e for e in re.split(r"[,\s]+", value) if e]
    for entry in entries:
        split_host_port(entry, 443)  # raises ValueError on a malformed entry
    return entries


def show_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
