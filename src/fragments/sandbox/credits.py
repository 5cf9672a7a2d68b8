"""Prepared runs already paid for: a `POST /api/sandbox/prepare` that took or started a
conversation's sandbox counts as one of the caller's sandbox runs, and the fragment's run that
follows it in the same conversation (same template) is then not counted again. So preparing
never gets a sandbox for free, and preparing then running costs what running alone costs.

Kept in this process's memory: with several app processes, or after a restart, the run is
counted again (the caller pays twice, never zero times)."""

from __future__ import annotations

from collections import OrderedDict

# Owners remembered at most; the oldest credit is dropped first (its run is then counted).
_MAX_CREDITS = 10_000


class PrepareCredits:
    """One credit per owner (a conversation's sandbox key), for the template it prepared."""

    def __init__(self, limit: int = _MAX_CREDITS) -> None:
        self._limit = limit
        self._credits: OrderedDict[str, str] = OrderedDict()

    def holds(self, owner: str, template_id: str) -> bool:
        """True when this owner's prepare for this template is paid and not yet used."""
        return self._credits.get(owner) == template_id

    def grant(self, owner: str, template_id: str) -> None:
        self._credits[owner] = template_id
        self._credits.move_to_end(owner)
        while len(self._credits) > self._limit:
            self._credits.popitem(last=False)

    def use(self, owner: str, template_id: str) -> bool:
        """Spend the owner's credit for a run of `template_id`; False when there is none. A
        credit for another template is dropped: that run replaces the prepared sandbox."""
        held = self._credits.pop(owner, None)
        return held == template_id
