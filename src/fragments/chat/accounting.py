"""Who pays for a model call, and its usage stored outside a turn (a cut-off answer, a summary)."""

from __future__ import annotations

import structlog

from fragments.llm.types import ModelCall, Usage
from fragments.principal import Principal
from fragments.store import repos
from fragments.store.db import Database
from fragments.store.models import BilledTo

log = structlog.get_logger(__name__)


def billed_to(call: ModelCall) -> BilledTo:
    """Who pays for `call`: a key or server the caller brought (in the request or saved with
    PUT /api/keys) is theirs; otherwise the platform's key is used and the team is charged."""
    own = call.api_key is not None or call.base_url is not None
    return "own_key" if own else "platform"


async def record_usage(
    db: Database,
    who: Principal,
    *,
    conversation_id: str | None,
    model: str,
    usage: Usage,
    cost: float,
    billed_to: BilledTo = "platform",
) -> None:
    """Store one usage record outside a turn (a cut-off answer, a summary); never raises."""
    if who.anonymous:
        return
    try:
        async with db.transaction(who.identity) as session:
            await repos.record_usage(
                session,
                who.identity,
                conversation_id=conversation_id,
                model=model,
                tokens={
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_tokens": usage.cache_read_tokens,
                    "cache_write_tokens": usage.cache_write_tokens,
                },
                cost_usd=cost,
                billed_to=billed_to,
            )
    except Exception:  # accounting must never fail a chat
        log.warning("usage_not_recorded", conversation_id=conversation_id, model=model)
