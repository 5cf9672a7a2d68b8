"""Sandbox time per team, for billing: each run of a signed-in caller (guest tokens included)
stores the seconds from asking for the sandbox to its result, tagged with the caller's team.
Time to a result is what a run held a sandbox busy for; a preview left open afterwards is not
counted (its lifetime is capped by `sandbox_lifetime_seconds` and its next run is counted again).
Anonymous guests store nothing, as for model usage."""

from __future__ import annotations

import structlog

from fragments.principal import Principal
from fragments.store.db import Database
from fragments.store.models import SandboxUsage

log = structlog.get_logger(__name__)


async def record_sandbox_time(db: Database, who: Principal, template: str, seconds: float) -> None:
    """Store one run's seconds for the caller's team; never raises (a run is not failed by
    its accounting)."""
    if who.anonymous or not who.team_id or who.user_id is None:
        return
    try:
        async with db.transaction(who.identity) as session:
            session.add(
                SandboxUsage(
                    user_id=who.user_id,
                    team_id=who.team_id,
                    template=template[:100],
                    seconds=max(0.0, seconds),
                )
            )
    except Exception:  # accounting must never fail a run
        log.warning("sandbox_time_not_recorded", user_id=who.user_id, template=template)
