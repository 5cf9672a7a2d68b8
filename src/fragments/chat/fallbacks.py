"""A request's own failover chain (`config.fallback_models`), checked before anything is spent."""

from __future__ import annotations

from fragments.errors import BadRequest
from fragments.llm.catalogue import CatalogueModel, resolve_model
from fragments.llm.types import ChainStep
from fragments.schemas import ChatRequest


def fallback_steps(body: ChatRequest, model: CatalogueModel) -> tuple[ChainStep, ...] | None:
    """The caller's chain, or None for the platform's. Each model must be one the request could
    name as its `model` (400 otherwise); with the caller's own key or base URL every step must
    be on the same provider, since that key and URL are the only ones its steps may use."""
    refs = body.config.fallback_models
    if refs is None:
        return None
    config = body.config
    own = config.api_key is not None or config.base_url is not None
    steps: list[ChainStep] = []
    for ref in refs:
        step = resolve_model(ref, has_base_url=config.base_url is not None)
        if own and step.provider_id != model.provider_id:
            raise BadRequest(
                f"fallback_models: '{step.id[:80]}' is a {step.provider} model; with your own "
                f"key or base URL, fallbacks must be {model.provider} models (your key is "
                "never sent to another provider).",
                code="invalid_fallback",
            )
        steps.append(ChainStep(step.provider_id, step.id))
    return tuple(steps)
