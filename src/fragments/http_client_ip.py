"""The client's IP address, the one key every per-IP limit uses.

`X-Forwarded-For` is believed only when the TCP peer is a trusted proxy
(`FRAGMENTS_TRUSTED_PROXIES`): anyone can send the header, so believing it from anyone would let a
guest pick a fresh address, and with it a fresh quota, on every request. Behind trusted proxies
the header is read from the right (each proxy appends the address it saw) and the first address
that is not itself a trusted proxy is the client; what lies left of it was written by the client
and is ignored.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN = "unknown"


@lru_cache(maxsize=16)
def parse_trusted(spec: str) -> tuple[Network, ...]:
    """The networks of a comma-separated list of IPs and CIDRs; ValueError names a bad entry."""
    networks: list[Network] = []
    for entry in spec.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from exc
    return tuple(networks)


def _address(text: str) -> Address | None:
    text = text.strip().strip('"')
    # "[v6]:port" and "v4:port" come from some proxies; the port is not part of the client.
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def _trusted(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def resolve_client_ip(peer: str | None, forwarded_for: list[str], trusted: str) -> str:
    """The client's address given the TCP `peer`, every `X-Forwarded-For` header value in
    order, and the trusted proxies' spec."""
    if not peer:
        return UNKNOWN
    networks = parse_trusted(trusted)
    peer_address = _address(peer)
    if peer_address is None or not _trusted(peer_address, networks):
        return str(peer_address) if peer_address is not None else peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    client = peer_address
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            # A trusted proxy passed on something that is no address: nothing left of it can
            # be checked, so the last address a trusted proxy vouched for stands.
            break
        client = address
        if not _trusted(address, networks):
            break
    return str(client)


def client_ip(connection: HTTPConnection, trusted: str) -> str:
    """The client's address for a request or WebSocket (see the module)."""
    peer = connection.client.host if connection.client else None
    return resolve_client_ip(peer, connection.headers.getlist("x-forwarded-for"), trusted)
