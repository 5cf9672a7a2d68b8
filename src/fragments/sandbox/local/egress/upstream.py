"""The proxy the app itself must use (HTTPS_PROXY / HTTP_PROXY in its environment, NO_PROXY
honoured), through which the egress proxy chains its requests."""

from __future__ import annotations

import base64
import re
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import structlog

log = structlog.get_logger(__name__)


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
