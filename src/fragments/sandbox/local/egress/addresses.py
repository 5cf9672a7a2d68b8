"""Which IP addresses code in a sandbox must never reach: loopback, private, link-local, CGNAT,
multicast, reserved (IPv4 and IPv6, IPv4 embedded in IPv6 judged as IPv4), and this
machine's own."""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
