"""The fleet's Redis client and the key that proves a request to a node comes from the API tier.

The fleet has its own client beside the app's shared one: its reads block on streams for
seconds (a node waiting for jobs, an API process waiting for a job's events), which the shared
client's 0.5 s socket timeout exists to forbid. It still connects with a short timeout, so an
unreachable Redis is a quick, clear 503 for fleet jobs."""

from __future__ import annotations

import hashlib
import hmac

from redis.asyncio import Redis

from fragments.config import Settings
from fragments.jobs.keys import FleetKeys

CONNECT_TIMEOUT_SECONDS = 0.5
# Longer than any blocking read the fleet makes (5 s at most).
SOCKET_TIMEOUT_SECONDS = 15.0
# Headers of a preview request forwarded by an API process to a node.
NODE_KEY_HEADER = "x-fragments-node-key"
PREVIEW_HEADER = "x-fragments-preview"


def fleet_redis(settings: Settings) -> Redis:
    """A client for FRAGMENTS_REDIS_URL fit for blocking stream reads; nothing connects yet."""
    if not settings.redis_url:
        raise RuntimeError(
            "The fleet (FRAGMENTS_EMBEDDED_NODE=false, or `fragments node`) needs Redis: "
            "set FRAGMENTS_REDIS_URL."
        )
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        decode_responses=True,
    )


def fleet_keys(settings: Settings) -> FleetKeys:
    return FleetKeys(settings.fleet_prefix)


def node_key(settings: Settings) -> str:
    """The shared secret of the API tier and the nodes, derived from FRAGMENTS_SECRET_KEY (so
    there is no second secret to distribute, and the secret key itself never travels)."""
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, b"fragments-node-preview-v1", hashlib.sha256).hexdigest()
