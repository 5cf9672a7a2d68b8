"""What one chat answer adds to the metrics and to its log line, recorded once it ends (never
per chunk)."""

from __future__ import annotations

import time
from typing import Any

from fragments.llm.types import ModelCall, Usage
from fragments.observability import metrics
from fragments.observability.context import current_tier


def answer_ended(
    call: ModelCall,
    *,
    began: float,
    first_at: float | None,
    provider: str | None,
    model: str | None,
    fallback: bool,
    outcome: str | None,
    usage: Usage | None,
    cost: float,
) -> dict[str, Any]:
    """Record an answer's metrics; the log fields that describe it. `outcome` is `ok`, the
    SSE error code, or None when the client left; `usage` None when nothing was counted."""
    provider = provider or call.provider_id
    model = model or call.model_id
    first = first_at - began if first_at is not None else None
    tokens = (
        {
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "cache_read": usage.cache_read_tokens,
            "cache_write": usage.cache_write_tokens,
        }
        if usage is not None
        else {}
    )
    metrics.llm_answer(
        provider,
        model,
        outcome=outcome,
        tier=current_tier(),
        first_token_seconds=first,
        answer_seconds=time.monotonic() - began if outcome == "ok" else None,
        tokens=tokens,
        cost_usd=cost,
    )
    fields: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "fallback": fallback,
        "first_token_ms": round(first * 1000, 1) if first is not None else None,
        "cost_usd": round(cost, 6),
    }
    if usage is not None:
        fields.update(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            usage_reported=usage.reported,
        )
    return fields
