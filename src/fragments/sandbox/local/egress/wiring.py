"""How the app sets up its egress proxies, and how a sandbox reaches one (the bound socket, socat
inside the sandbox, the proxy variables)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fragments.sandbox.local.egress.policy import EgressPolicy, registries_policy
from fragments.sandbox.local.egress.proxy import EgressProxy

# Inside a sandbox: where the proxy's socket is bound and where socat serves it.
EGRESS_SOCKET = "/run/fragments-egress.sock"
EGRESS_PORT = 3128


@dataclass(frozen=True, slots=True)
class SandboxEgress:
    """How a sandbox reaches one proxy: the bound socket, socat, and the proxy variables."""

    socket: Path
    # Running code keeps its own localhost off the proxy (Gradio checks its server that way);
    # an install has nothing local to reach.
    keep_local: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{EGRESS_PORT}"

    def bind(self) -> tuple[Path, str]:
        return self.socket, EGRESS_SOCKET

    def env(self) -> dict[str, str]:
        local = "localhost,127.0.0.1,::1" if self.keep_local else ""
        return {
            "HTTP_PROXY": self.url,
            "HTTPS_PROXY": self.url,
            "http_proxy": self.url,
            "https_proxy": self.url,
            "NO_PROXY": local,
            "no_proxy": local,
            "npm_config_proxy": self.url,
            "npm_config_https_proxy": self.url,
            "npm_config_noproxy": local,
        }

    def wrap(self, command: list[str]) -> list[str]:
        """Start socat on 127.0.0.1:3128 -> the bound socket, wait until it listens, then run."""
        listening = f"0100007F:{EGRESS_PORT:04X} 00000000:0000 0A"
        script = (
            f"socat TCP-LISTEN:{EGRESS_PORT},bind=127.0.0.1,reuseaddr,fork "
            f"UNIX-CONNECT:{EGRESS_SOCKET} </dev/null >/dev/null 2>&1 &\n"
            "i=0\n"
            f"while [ $i -lt 400 ] && ! grep -q '{listening}' /proc/net/tcp; do\n"
            "  sleep 0.005; i=$((i+1))\n"
            "done\n"
            'exec "$@"'
        )
        return ["/bin/sh", "-c", script, "sh", *command]


@dataclass(slots=True)
class EgressSetup:
    """The app's proxies and how installs and running code reach them."""

    installs: SandboxEgress
    code: SandboxEgress | None
    proxies: list[EgressProxy]

    async def start(self) -> None:
        for proxy in self.proxies:
            await proxy.start()

    async def aclose(self) -> None:
        for proxy in self.proxies:
            await proxy.aclose()


def egress_setup(
    folder: Path,
    *,
    mode: Literal["none", "internet"],
    registry_hosts: Iterable[str],
    index_urls: Iterable[str | None],
) -> EgressSetup:
    """A registries proxy for installs, and an internet one for code when enabled."""
    installs = folder / "egress-registries.sock"
    proxies = [EgressProxy(registries_policy(registry_hosts, index_urls), installs)]
    code: SandboxEgress | None = None
    if mode == "internet":
        path = folder / "egress-internet.sock"
        proxies.append(EgressProxy(EgressPolicy("internet"), path))
        code = SandboxEgress(path, keep_local=True)
    return EgressSetup(installs=SandboxEgress(installs), code=code, proxies=proxies)


def index_urls_from_environment() -> list[str | None]:
    """Index and registry URLs the installers take from the app's environment."""
    keys = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "npm_config_registry", "NPM_CONFIG_REGISTRY")
    return [os.environ.get(key) for key in keys]
