"""Where each provider lives, which wire protocol it speaks, and whose key goes where.

Mistral, Groq, Fireworks, Together, xAI, DeepSeek and Ollama all serve the OpenAI chat-completions
protocol at the base URLs below (each documents it), so they share the OpenAI wire code; only
Anthropic and Gemini have protocols of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fragments.config import ProviderId, Settings
from fragments.llm.catalogue import PROVIDER_NAMES
from fragments.llm.errors import LLMError

WireProtocol = Literal["openai", "anthropic", "google"]
# How the model is asked for structured output: a forced function/tool call whose arguments
# are the fragment, or a JSON object as the message content (servers without tool support).
OutputMode = Literal["tool", "json"]

# A placeholder key for servers that need none (Ollama, most local servers). The SDKs refuse an
# empty key, and sending the platform's key instead would leak it to a stranger's URL.
NO_KEY = "no-key"


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    id: ProviderId
    protocol: WireProtocol
    base_url: str
    key_env: str | None
    mode: OutputMode


PROVIDERS: dict[ProviderId, ProviderSpec] = {
    spec.id: spec
    for spec in (
        ProviderSpec("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "tool"),
        ProviderSpec(
            "anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", "tool"
        ),
        ProviderSpec(
            "google",
            "google",
            "https://generativelanguage.googleapis.com",
            "GOOGLE_API_KEY",
            "json",
        ),
        ProviderSpec("mistral", "openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", "tool"),
        ProviderSpec("groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "tool"),
        ProviderSpec(
            "fireworks",
            "openai",
            "https://api.fireworks.ai/inference/v1",
            "FIREWORKS_API_KEY",
            "tool",
        ),
        ProviderSpec(
            "togetherai", "openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "tool"
        ),
        ProviderSpec("xai", "openai", "https://api.x.ai/v1", "XAI_API_KEY", "tool"),
        ProviderSpec(
            "deepseek", "openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "tool"
        ),
        # Ollama streams a tool call only once it is complete, so partials would not grow; its
        # JSON-schema output mode streams token by token.
        ProviderSpec("ollama", "openai", "http://127.0.0.1:11434/v1", None, "json"),
    )
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A resolved destination for one call. `repr` never shows the key."""

    provider_id: ProviderId
    provider_name: str
    protocol: WireProtocol
    base_url: str
    api_key: str
    # The caller supplied the URL: only the caller's key (or none) may be sent there.
    user_url: bool
    mode: OutputMode

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
    name = PROVIDER_NAMES[provider_id]
    if base_url:
        return Endpoint(
            provider_id, name, spec.protocol, base_url, api_key or NO_KEY, True, spec.mode
        )
    key = api_key or settings.provider_key(provider_id)
    if key is None:
        if spec.key_env is None:
            key = NO_KEY
        else:
            raise LLMError(
                "provider_auth",
                f"No API key for {name}: set {spec.key_env} or enter a key in settings.",
            )
    url = settings.provider_base_url(provider_id) or spec.base_url
    return Endpoint(provider_id, name, spec.protocol, url, key, False, spec.mode)
