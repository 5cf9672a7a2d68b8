"""The model catalogue (llm/models.json) and resolving a request's model reference."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from fragments.errors import BadRequest
from fragments.llm.providers import PROVIDERS, find_provider
from fragments.llm.types import ProviderId
from fragments.schemas import ModelRef


@dataclass(frozen=True, slots=True)
class CatalogueModel:
    id: str
    name: str
    provider: str
    provider_id: ProviderId
    multimodal: bool

    def to_public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "provider": self.provider,
            "providerId": self.provider_id,
            "multiModal": self.multimodal,
        }


# The packaged data file: every model the UI offers, each naming its provider's spec id.
CATALOGUE_FILE: Traversable = resources.files("fragments.llm").joinpath("models.json")


@cache
def load_catalogue() -> tuple[CatalogueModel, ...]:
    """Every model the UI offers, read once from `CATALOGUE_FILE`."""
    raw = json.loads(CATALOGUE_FILE.read_text())
    return tuple(
        CatalogueModel(
            id=m["id"],
            name=m["name"],
            provider=m["provider"],
            provider_id=m["providerId"],
            multimodal=bool(m["multiModal"]),
        )
        for m in raw["models"]
    )


def _unknown_provider(given: str) -> BadRequest:
    return BadRequest(
        f"Unknown provider '{given[:40]}'; use one of: {', '.join(PROVIDERS)}.",
        code="unknown_model",
    )


def resolve_provider(ref: ModelRef) -> ProviderId:
    """`providerId` wins; else `provider` matched case-insensitively against ids and names."""
    if ref.provider_id:
        spec = find_provider(ref.provider_id.strip().lower())
        if spec is None:
            raise _unknown_provider(ref.provider_id)
        return spec.id
    if ref.provider:
        wanted = ref.provider.strip().lower()
        for spec in PROVIDERS.values():
            if wanted in (spec.id, spec.name.lower()):
                return spec.id
        raise _unknown_provider(ref.provider)
    for model in load_catalogue():
        if model.id == ref.id:
            return model.provider_id
    raise BadRequest("The model has no provider; send model.providerId.", code="unknown_model")


def resolve_model(ref: ModelRef, *, has_base_url: bool) -> CatalogueModel:
    """The catalogue entry for a request; with a user base URL any model id is accepted."""
    provider_id = resolve_provider(ref)
    for model in load_catalogue():
        if model.id == ref.id and model.provider_id == provider_id:
            return model
    spec = PROVIDERS[provider_id]
    if has_base_url or spec.any_model:
        return CatalogueModel(
            id=ref.id,
            name=ref.name or ref.id,
            provider=spec.name,
            provider_id=provider_id,
            multimodal=True,
        )
    raise BadRequest(
        f"Unknown model '{ref.id[:80]}' for provider '{provider_id}'. "
        "Pick one from /api/models, or set a base URL to reach any model.",
        code="unknown_model",
    )
