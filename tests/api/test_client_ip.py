"""The client IP behind per-IP limits: X-Forwarded-For is believed only from a trusted proxy
(FRAGMENTS_TRUSTED_PROXIES), read from the right, stopping at the first untrusted address; from
anyone else the TCP peer is the client. Checked on the function and at the wire, with real ASGI
client addresses, through the guest-minting limit (one per IP here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from pydantic import ValidationError

from fragments.app import create_app
from fragments.config import Settings
from fragments.http_client_ip import resolve_client_ip

pytestmark = pytest.mark.anyio

PROXIES = "10.0.0.0/8, 192.168.1.1, 2001:db8::/32"


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert resolve_client_ip("203.0.113.9", ["1.2.3.4"], "") == "203.0.113.9"
    assert resolve_client_ip("203.0.113.9", ["1.2.3.4"], PROXIES) == "203.0.113.9"
    assert resolve_client_ip("203.0.113.9", [], PROXIES) == "203.0.113.9"


def test_behind_trusted_proxies_the_first_untrusted_address_from_the_right_is_the_client() -> None:
    # The client spoofs "6.6.6.6"; the proxy appends the address it saw.
    assert resolve_client_ip("10.1.2.3", ["6.6.6.6, 198.51.100.7"], PROXIES) == "198.51.100.7"
    # Two trusted hops (a load balancer, then an ingress): both skipped.
    chain = ["6.6.6.6, 198.51.100.7, 192.168.1.1"]
    assert resolve_client_ip("10.1.2.3", chain, PROXIES) == "198.51.100.7"
    # The header split over several lines reads as one list.
    assert resolve_client_ip("10.1.2.3", ["6.6.6.6", "198.51.100.7"], PROXIES) == "198.51.100.7"
    # No header: the proxy itself is all we know.
    assert resolve_client_ip("10.1.2.3", [], PROXIES) == "10.1.2.3"
    # Every hop trusted: the leftmost is the client (an internal caller).
    assert resolve_client_ip("10.1.2.3", ["10.9.9.9, 192.168.1.1"], PROXIES) == "10.9.9.9"


def test_odd_forwarded_entries() -> None:
    # Garbage a trusted proxy passed on: the last address a trusted proxy vouched for stands.
    assert resolve_client_ip("10.1.2.3", ["not-an-ip"], PROXIES) == "10.1.2.3"
    assert resolve_client_ip("10.1.2.3", ["198.51.100.7, junk, 10.0.0.5"], PROXIES) == "10.0.0.5"
    # Ports and brackets are dropped; IPv6 and IPv4-mapped IPv6 are understood.
    assert resolve_client_ip("10.1.2.3", ["198.51.100.7:4711"], PROXIES) == "198.51.100.7"
    assert resolve_client_ip("2001:db8::1", ["[2001:db9::5]:443"], PROXIES) == "2001:db9::5"
    assert resolve_client_ip("::ffff:10.1.2.3", ["198.51.100.7"], PROXIES) == "198.51.100.7"
    assert resolve_client_ip(None, ["198.51.100.7"], PROXIES) == "unknown"


def test_a_bad_trusted_proxy_entry_stops_the_start() -> None:
    with pytest.raises(ValidationError, match="not an IP address"):
        Settings(_env_file=None, trusted_proxies="10.0.0.0/8, proxy.internal")  # type: ignore[call-arg]
    settings = Settings(_env_file=None, trusted_proxies=" 10.0.0.1/8 ,::1")  # type: ignore[call-arg]
    assert settings.trusted_proxies == "10.0.0.0/8,::1/128"


@asynccontextmanager
async def client_from(settings: Settings, peer: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def _mint(client: httpx.AsyncClient, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return (await client.post("/api/auth/guest", headers=headers)).status_code


async def test_a_forged_header_from_an_untrusted_peer_gets_no_fresh_quota(
    db_settings: Settings,
) -> None:
    settings = db_settings.model_copy(update={"allow_guests": True, "guest_tokens_per_day": 1})
    async with client_from(settings, "203.0.113.9") as client:
        assert await _mint(client, "1.1.1.1") == 201
        # A new forged address each time: still the peer's one quota.
        assert await _mint(client, "2.2.2.2") == 429
        assert await _mint(client) == 429


async def test_clients_behind_a_trusted_proxy_are_told_apart(db_settings: Settings) -> None:
    settings = db_settings.model_copy(
        update={"allow_guests": True, "guest_tokens_per_day": 1, "trusted_proxies": PROXIES}
    )
    async with client_from(settings, "10.0.0.2") as client:
        assert await _mint(client, "198.51.100.7") == 201
        assert await _mint(client, "198.51.100.8") == 201
        # The same client spoofing a left-hand entry is still itself.
        assert await _mint(client, "6.6.6.6, 198.51.100.7") == 429
        # The proxy's own requests (no header) are the proxy's.
        assert await _mint(client) == 201
        assert await _mint(client) == 429
