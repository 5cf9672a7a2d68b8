"""Who is calling, as every service sees it: resolved from the token by `auth.deps`, used by
auth, chat, quota, sandbox and conversations alike (so none of them imports another for it)."""

from __future__ import annotations

from dataclasses import dataclass

from fragments.store.db import Identity


@dataclass(frozen=True)
class Principal:
    """The caller. `user_id` is None for an anonymous guest (no token, guests allowed)."""

    user_id: str | None
    team_id: str | None
    session_id: str | None = None
    is_guest: bool = True
    # True when the token was checked by signature alone because the database was down.
    offline: bool = False

    @property
    def identity(self) -> Identity:
        return Identity(self.user_id or "", self.team_id or "")

    @property
    def anonymous(self) -> bool:
        return self.user_id is None


ANONYMOUS = Principal(user_id=None, team_id=None)
