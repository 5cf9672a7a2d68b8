"""List prices of the catalogue's models, to put a cost on each answer's usage.

USD per million tokens: input, output, cache read, cache write. Models not listed cost 0.0 (local
models, a caller's own server, anything newer than this table).
"""

from __future__ import annotations

from fragments.llm.types import Usage

_PRICES: dict[str, tuple[float, float, float, float]] = {
    "claude-sonnet-5-5": (3.0, 15.0, 0.30, 3.75),
    "claude-opus-5-5": (5.0, 25.0, 0.50, 6.25),
    "claude-haiku-5-5": (1.0, 5.0, 0.10, 1.25),
    "claude-haiku-4-5": (1.0, 5.0, 0.10, 1.25),
    "gpt-4.1": (2.0, 8.0, 0.50, 2.0),
    "gpt-4.1-mini": (0.40, 1.60, 0.10, 0.40),
    "gpt-4o": (2.50, 10.0, 1.25, 2.50),
    "o4-mini": (1.10, 4.40, 0.275, 1.10),
    "gemini-2.5-pro": (1.25, 10.0, 0.31, 1.25),
    "gemini-2.5-flash": (0.30, 2.50, 0.075, 0.30),
    "deepseek-chat": (0.27, 1.10, 0.07, 0.27),
    "deepseek-reasoner": (0.55, 2.19, 0.14, 0.55),
    # Morph's apply models (edits merged into the current code; no prompt caching).
    "morph-v3-large": (0.90, 1.90, 0.90, 0.90),
    "morph-v3-fast": (0.80, 1.20, 0.80, 0.80),
}


def cost_usd(model_id: str, usage: Usage) -> float:
    """What the answer cost at list price; 0.0 for models without a price."""
    price = _PRICES.get(model_id)
    if price is None:
        return 0.0
    p_in, p_out, p_read, p_write = price
    fresh = max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens)
    total = (
        fresh * p_in
        + usage.output_tokens * p_out
        + usage.cache_read_tokens * p_read
        + usage.cache_write_tokens * p_write
    )
    return round(total / 1_000_000, 6)
