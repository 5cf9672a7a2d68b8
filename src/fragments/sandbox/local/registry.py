"""The live sandboxes of this process: by id and by owner, how many callers use each, their idle
lifetimes, the ids recently closed (so their preview URLs say "expired" rather than "unknown"),
which one to evict when every slot is taken, and which ones the reaper closes."""

from __future__ import annotations

import time

from fragments.sandbox.local.kernel import KernelSandbox
from fragments.sandbox.local.web import WebSandbox

Sandbox = KernelSandbox | WebSandbox
# Ids of closed sandboxes remembered so their preview URLs say "expired" rather than "unknown".
_GONE_MEMORY = 4096


class SandboxRegistry:
    """Bookkeeping only: starting and closing sandboxes is the service's."""

    def __init__(self, default_lifetime: float) -> None:
        self.default_lifetime = default_lifetime
        self.by_id: dict[str, Sandbox] = {}
        self.by_owner: dict[str, Sandbox] = {}
        self._gone: dict[str, None] = {}
        self._users: dict[str, int] = {}
        # Idle lifetimes raised with `extend`; the others use the default lifetime.
        self._lifetimes: dict[str, float] = {}

    def register(self, sandbox: Sandbox) -> None:
        """A new live sandbox, with its first user (released with `release`)."""
        self.by_id[sandbox.id] = sandbox
        self._users[sandbox.id] = 1
        if sandbox.owner is not None:
            self.by_owner[sandbox.owner] = sandbox

    def use(self, sandbox: Sandbox) -> None:
        """One user more of a live sandbox."""
        self._users[sandbox.id] += 1

    def release(self, sandbox: Sandbox) -> None:
        """One user fewer of `sandbox`; an unused one may be evicted or reaped."""
        self._users[sandbox.id] = self._users.get(sandbox.id, 1) - 1

    def forget(self, sandbox: Sandbox) -> None:
        """No longer live (it is being closed): its id is remembered as gone."""
        self.by_id.pop(sandbox.id, None)
        self._gone[sandbox.id] = None
        while len(self._gone) > _GONE_MEMORY:
            del self._gone[next(iter(self._gone))]
        if sandbox.owner is not None and self.by_owner.get(sandbox.owner) is sandbox:
            del self.by_owner[sandbox.owner]

    def closed(self, sandbox_id: str) -> None:
        """Drop what was kept about a sandbox once it is closed."""
        self._users.pop(sandbox_id, None)
        self._lifetimes.pop(sandbox_id, None)

    def clear(self) -> list[Sandbox]:
        """Forget every live sandbox (shutting down); the ones to close."""
        sandboxes = list(self.by_id.values())
        self.by_id.clear()
        self.by_owner.clear()
        return sandboxes

    def is_gone(self, sandbox_id: str) -> bool:
        return sandbox_id in self._gone

    def extend(self, sandbox_id: str, lifetime: float) -> bool:
        """Let a live sandbox stay idle `lifetime` seconds; False when no live one has the id."""
        sandbox = self.by_id.get(sandbox_id)
        if sandbox is None:
            return False
        self._lifetimes[sandbox_id] = lifetime
        sandbox.last_used = time.monotonic()
        return True

    def least_recent_idle(self) -> Sandbox | None:
        """The sandbox to evict when every slot is taken: unused, and idle the longest."""
        idle = [s for s in self.by_id.values() if self._users.get(s.id, 0) == 0]
        return min(idle, key=lambda s: s.last_used, default=None)

    def expired(self, now: float) -> list[Sandbox]:
        """Unused sandboxes idle for longer than their lifetime (the reaper's to close)."""
        return [
            s
            for s in list(self.by_id.values())
            if self._users.get(s.id, 0) == 0
            and now - s.last_used > self._lifetimes.get(s.id, self.default_lifetime)
        ]
