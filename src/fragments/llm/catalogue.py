"""The model catalogue (llm/models.json) and resolving a request's model reference."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fragments.config import PROVIDER_IDS, ProviderId
from fragments.errors import BadRequest
from fragments.schemas import ModelRef

PROVIDER_NAMES: dict[ProviderId, str] = {
    "anthropic": "Anthropic",
    "openai": "OpenAI",
    "google": "Google Generative AI",
    "mistral": "Mistral",
    "groq": "Groq",
    "fireworks": "Fireworks",
    "togetherai": "Together AI",
    "xai": "xAI",
    "deepseek": "DeepSeek",
    "ollama": "Ollama",
}


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


@cache
def load_catalogue() -> tuple[CatalogueModel, ...]:
    """Every model the UI offers, read once from the packaged data file."""
    raw = json.loads(resources.files("fragments.llm").joinpath("models.json").read_text())
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


def resolve_provider(ref: ModelRef) -> ProviderId:
    """`providerId` wins; else `provider` matched case-insensitively against ids and names."""
    if ref.provider_id:
        pid = ref.provider_id.strip().lower()
        for known in PROVIDER_IDS:
            if known == pid:
                return known
        raise BadRequest(
            f"Unknown provider '{ref.provider_id[:40]}'; use one of: {', '.join(PROVIDER_IDS)}.",
            code="unknown_model",
        )
    if ref.provider:
        wanted = ref.provider.strip().lower()
        for pid, name in PROVIDER_NAMES.items():
            if wanted in (pid, name.lower()):
                return pid
        raise BadRequest(
            f"Unknown provider '{ref.provider[:40]}'; use one of: {', '.join(PROVIDER_IDS)}.",
            code="unknown_model",
        )
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
    # Ollama serves whatever the user pulled, so any id is fine there too.
    if has_base_url or provider_id == "ollama":
        return CatalogueModel(
            id=ref.id,
            name=ref.name or ref.id,
            provider=PROVIDER_NAMES[provider_id],
            provider_id=provider_id,
            multimodal=True,
        )
    raise BadRequest(
        f"Unknown model '{ref.id[:80]}' for provider '{provider_id}'. "
        "Pick one from /api/models, or set a base URL to reach any model.",
        code="unknown_model",
    )
