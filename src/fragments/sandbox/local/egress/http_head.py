"""The one request head an egress proxy reads from a sandbox (`CONNECT host:port`, or a plain
absolute-URI request, hop-by-hop headers dropped) and the short answers it sends back."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fragments.hostport import normalize_host, split_host_port

# Control bytes other than the CRLF line ends: a bare CR or LF could split a forwarded header.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(slots=True)
class ProxyRequest:
    """One parsed request head: a tunnel (`CONNECT`) or a plain absolute-URI HTTP request."""

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


class BadProxyRequest(Exception):
    """A request head the proxy answers with `status` and the message, never forwards."""

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


def parse_head(head: bytes) -> ProxyRequest:
    # A bare CR or LF (or another control byte) could split one forwarded header into two.
    if _CONTROL.search(head[:-4].replace(b"\r\n", b"")):
        raise BadProxyRequest(400, "control characters in the request head")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadProxyRequest(400, "not an HTTP/1 proxy request")
    method, target, version = parts
    if method == "CONNECT":
        try:
            host, port = split_host_port(target, None)
        except ValueError as exc:
            raise BadProxyRequest(400, str(exc)) from exc
        return ProxyRequest(tunnel=True, host=host, port=port)
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise BadProxyRequest(400, "only CONNECT and absolute http:// requests are proxied")
    try:
        host, port = normalize_host(url.hostname), url.port or 80
    except ValueError as exc:
        raise BadProxyRequest(400, str(exc)) from exc
    path = url.path or "/"
    if url.query:
        path += f"?{url.query}"
    headers = [
        line
        for line in lines[1:]
        if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP
    ]
    return ProxyRequest(
        tunnel=False,
        host=host,
        port=port,
        method=method,
        path=path,
        version=version,
        headers=headers,
    )


def refusal(status: int, reason: str) -> bytes:
    body = (reason.replace("\r", " ").replace("\n", " ")[:300] + "\n").encode()
    return (
        f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
