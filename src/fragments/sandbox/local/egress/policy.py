"""What an egress proxy lets through: the allowlist of package registries, or the public internet
minus mail ports and non-public addresses; and the host and port of an index URL."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fragments.hostport import normalize_host, split_host_port
from fragments.sandbox.local.egress.addresses import blocked_reason

Mode = Literal["registries", "internet"]

DEFAULT_REGISTRIES = ("pypi.org", "files.pythonhosted.org", "registry.npmjs.org")
# Open relays for mail are the classic abuse of an egress proxy.
MAIL_PORTS = frozenset({25, 465, 587})


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


def show_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
