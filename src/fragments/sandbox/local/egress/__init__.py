"""Sandbox egress: an HTTP forward proxy on the app side, reached through a unix socket.

Sandboxes live in network namespaces of their own with nothing but a loopback. When a sandbox
may reach the outside (installs always, running code only with FRAGMENTS_SANDBOX_EGRESS=internet)
socat inside it listens on 127.0.0.1:3128 and forwards to this proxy's socket, bound into the
sandbox; HTTP(S)_PROXY point there. The proxy accepts `CONNECT host:port` (and plain-HTTP
absolute-URI requests, for an operator's http:// registry) and applies one policy:

- `registries`: only allowlisted (host, port) pairs: PyPI and npm, the hosts of the configured
  indexes, and FRAGMENTS_SANDBOX_REGISTRY_HOSTS. The operator's list is trusted as is, so a
  registry on a private address works.
- `internet`: any host, but the proxy resolves the name itself, refuses when any address is
  loopback, private, link-local, CGNAT, multicast, unspecified or otherwise reserved (IPv4 and
  IPv6, IPv4 embedded in IPv6 included) or this machine's own (its public address, where the app
  or a database may listen on all interfaces), and connects to the vetted address: no second
  lookup, so a name cannot be rebound to a private address in between. Mail ports are refused.

A refusal answers 403 with a one-line reason and is logged. Raw sockets have no route out: egress
is HTTP(S) through this proxy only. Header size, connection count (in all and per sandbox uid,
read with SO_PEERCRED) and idle time are bounded. When the app itself must use a proxy
(HTTPS_PROXY / HTTP_PROXY in its environment, NO_PROXY honoured) requests are chained through it.
"""

from fragments.sandbox.local.egress.addresses import blocked_reason, is_this_host
from fragments.sandbox.local.egress.policy import (
    EgressPolicy,
    Mode,
    Refused,
    registries_policy,
)
from fragments.sandbox.local.egress.proxy import EgressLimits, EgressProxy
from fragments.sandbox.local.egress.upstream import Upstream, Upstreams
from fragments.sandbox.local.egress.wiring import (
    EgressSetup,
    SandboxEgress,
    egress_setup,
    index_urls_from_environment,
)

__all__ = [
    "EgressLimits",
    "EgressPolicy",
    "EgressProxy",
    "EgressSetup",
    "Mode",
    "Refused",
    "SandboxEgress",
    "Upstream",
    "Upstreams",
    "blocked_reason",
    "egress_setup",
    "index_urls_from_environment",
    "is_this_host",
    "registries_policy",
]
