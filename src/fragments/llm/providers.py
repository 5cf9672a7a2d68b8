"""Where each provider lives, which wire protocol it speaks, and whose key goes where.

One `ProviderSpec` record per provider; everything else (ids, display names, keys and URLs from
the settings, schema profiles, catalogue checks) is derived from it. Adding an OpenAI-compatible
provider is one record here plus its models in `models.json`; its id also goes into the
`ProviderId` Literal (types.py, for mypy) and, for a platform key read from the environment, its
two `Settings` fields are declared in config.py: tests hold both in step with the records.

Mistral, Groq, Fireworks, Together, xAI, DeepSeek and Ollama all serve the OpenAI chat-completions
protocol at the base URLs below (each documents it), so they share the OpenAI wire code; only
Anthropic and Gemini have protocols of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from fragments.config import Settings
from fragments.llm.errors import LLMError
from fragments.llm.types import ProviderId

WireProtocol = Literal["openai", "anthropic", "google"]
# How the model is asked for structured output: a forced function/tool call whose arguments
# are the fragment, or a JSON object as the message content (servers without tool support).
OutputMode = Literal["tool", "json"]

# A placeholder key for servers that need none (Ollama, most local servers). The SDKs refuse an
# empty key, and sending the platform's key instead would leak it to a stranger's URL.
NO_KEY = "no-key"


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything the app knows about one provider; nothing else switches on provider ids."""

    id: ProviderId
    # As the catalogue and the UI show it; a request's `provider` may name it too.
    name: str
    protocol: WireProtocol
    # The platform's URL unless `<env>_BASE_URL` overrides it.
    base_url: str
    # The prefix of its environment variables, `<env>_API_KEY` and `<env>_BASE_URL`, and of the
    # matching settings fields (`<env lowercased>_api_key`, `_base_url`); None: not configurable.
    env: str | None
    mode: OutputMode = "tool"
    # A server that needs no key (a local one): calls without a key send `NO_KEY`.
    keyless: bool = False
    # For the OpenAI protocol: where pydantic-ai's model profile for this provider lives
    # (`module:attribute`), loaded with the SDKs; its JSON-schema transformer shapes the tool.
    profile: str = "pydantic_ai.providers.openai:OpenAIProvider.model_profile"
    # OpenAI's own API names the output cap `max_completion_tokens` (reasoning models refuse
    # `max_tokens`) and has no `top_k`; compatible servers take the classic names.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    top_k: bool = True
    # Serves whatever model the user installed, so any model id is accepted (Ollama).
    any_model: bool = False
    # The family's cheaper model that writes conversation summaries; None: the chat's own model.
    summary_model: str | None = None

    @property
    def key_env(self) -> str | None:
        """The variable holding the platform's key (None for keyless providers)."""
        return None if self.env is None or self.keyless else f"{self.env}_API_KEY"

    def platform_key(self, settings: Settings) -> str | None:
        """The platform's API key for this provider, if configured."""
        value = _setting(settings, self.env, "api_key")
        if isinstance(value, SecretStr):
            return value.get_secret_value() or None
        return None

    def platform_base_url(self, settings: Settings) -> str:
        """The platform's URL: `<env>_BASE_URL` when set, else the default."""
        value = _setting(settings, self.env, "base_url")
        return value if isinstance(value, str) and value else self.base_url


def _setting(settings: Settings, env: str | None, suffix: str) -> object:
    # The settings fields keep the providers' usual variable names (`OPENAI_API_KEY`, ...); a
    # provider without fields of its own (a new one not yet in `Settings`) has nothing set.
    return None if env is None else getattr(settings, f"{env.lower()}_{suffix}", None)


_PROFILES = "pydantic_ai.profiles"
PROVIDERS: dict[ProviderId, ProviderSpec] = {
    spec.id: spec
    for spec in (
        ProviderSpec(
            "anthropic",
            "Anthropic",
            "anthropic",
            "https://api.anthropic.com",
            "ANTHROPIC",
            summary_model="claude-haiku-4-5",
        ),
        ProviderSpec(
            "openai",
            "OpenAI",
            "openai",
            "https://api.openai.com/v1",
            "OPENAI",
            max_tokens_field="max_completion_tokens",
            top_k=False,
            summary_model="gpt-4.1-mini",
        ),
        ProviderSpec(
            "google",
            "Google Generative AI",
            "google",
            "https://generativelanguage.googleapis.com",
            "GOOGLE",
            mode="json",
            summary_model="gemini-2.5-flash",
        ),
        ProviderSpec(
            "mistral",
            "Mistral",
            "openai",
            "https://api.mistral.ai/v1",
            "MISTRAL",
            profile=f"{_PROFILES}.mistral:mistral_model_profile",
        ),
        ProviderSpec(
            "groq",
            "Groq",
            "openai",
            "https://api.groq.com/openai/v1",
            "GROQ",
            profile=f"{_PROFILES}.groq:groq_model_profile",
        ),
        ProviderSpec(
            "fireworks",
            "Fireworks",
            "openai",
            "https://api.fireworks.ai/inference/v1",
            "FIREWORKS",
            profile="pydantic_ai.providers.fireworks:FireworksProvider.model_profile",
        ),
        ProviderSpec(
            "togetherai",
            "Together AI",
            "openai",
            "https://api.together.xyz/v1",
            "TOGETHER",
            profile="pydantic_ai.providers.together:TogetherProvider.model_profile",
        ),
        ProviderSpec(
            "xai",
            "xAI",
            "openai",
            "https://api.x.ai/v1",
            "XAI",
            profile=f"{_PROFILES}.grok:grok_model_profile",
        ),
        ProviderSpec(
            "deepseek",
            "DeepSeek",
            "openai",
            "https://api.deepseek.com/v1",
            "DEEPSEEK",
            profile="pydantic_ai.providers.deepseek:DeepSeekProvider.model_profile",
        ),
        # Ollama streams a tool call only once it is complete, so partials would not grow; its
        # JSON-schema output mode streams token by token.
        ProviderSpec(
            "ollama",
            "Ollama",
            "openai",
            "http://127.0.0.1:11434/v1",
            "OLLAMA",
            mode="json",
            keyless=True,
            profile="pydantic_ai.providers.ollama:OllamaProvider.model_profile",
            any_model=True,
        ),
    )
}


def find_provider(provider_id: str) -> ProviderSpec | None:
    """The spec with this id (exact, lower-case), or None."""
    for spec in PROVIDERS.values():
        if spec.id == provider_id:
            return spec
    return None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A resolved destination for one call. `repr` never shows the key."""

    spec: ProviderSpec
    base_url: str
    api_key: str
    # The caller supplied the URL: only the caller's key (or none) may be sent there.
    user_url: bool
    mode: OutputMode

    @property
    def provider_id(self) -> ProviderId:
        return self.spec.id

    @property
    def provider_name(self) -> str:
        return self.spec.name

    @property
    def protocol(self) -> WireProtocol:
        return self.spec.protocol

    def __repr__(self) -> str:
        return (
            f"Endpoint({self.provider_id}, {self.base_url!r}, user_url={self.user_url}, "
            f"mode={self.mode})"
        )


def resolve_endpoint(
    settings: Settings, provider_id: ProviderId, api_key: str | None, base_url: str | None
) -> Endpoint:
    """Apply the key rules: a request's base URL gets the request's key or none; the
    platform's key only ever goes to the platform's URL (`<PROVIDER>_BASE_URL` or the default)."""
    spec = PROVIDERS[provider_id]
    if base_url:
        return Endpoint(spec, base_url, api_key or NO_KEY, True, spec.mode)
    key = api_key or spec.platform_key(settings)
    if key is None:
        if not spec.keyless:
            where = f"set {spec.key_env} or enter" if spec.key_env else "enter"
            raise LLMError(
                "provider_auth", f"No API key for {spec.name}: {where} a key in settings."
            )
        key = NO_KEY
    return Endpoint(spec, spec.platform_base_url(settings), key, False, spec.mode)
