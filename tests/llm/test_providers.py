"""Endpoint resolution (whose key goes where), error mapping and prices."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import AliasChoices

from fragments.config import Settings
from fragments.llm.errors import LLMError, status_error
from fragments.llm.faults import read_fault
from fragments.llm.gemini_wire import stream_url
from fragments.llm.pricing import cost_usd
from fragments.llm.providers import NO_KEY, PROVIDERS, ProviderSpec, resolve_endpoint
from fragments.llm.types import ProviderId, Usage


def make(**values: object) -> Settings:
    base: dict[str, object] = {f"{p}_api_key": None for p in ("openai", "anthropic", "google")}
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg, arg-type]


def test_every_provider_has_a_spec() -> None:
    # The Literal is for mypy; the specs are the truth, and the two stay the same set.
    assert set(PROVIDERS) == set(get_args(ProviderId))
    for provider_id, spec in PROVIDERS.items():
        assert spec.id == provider_id
        assert spec.base_url.startswith(("https://", "http://127.0.0.1"))


def _aliases(field: str) -> set[str]:
    alias = Settings.model_fields[field].validation_alias
    assert isinstance(alias, AliasChoices)
    return {str(choice) for choice in alias.choices}


@pytest.mark.parametrize("spec", PROVIDERS.values(), ids=lambda spec: spec.id)
def test_specs_and_settings_name_the_same_variables(spec: ProviderSpec) -> None:
    assert spec.env is not None
    prefix = spec.env.lower()
    assert _aliases(f"{prefix}_base_url") == {f"{spec.env}_BASE_URL"}
    if spec.keyless:
        assert f"{prefix}_api_key" not in Settings.model_fields
    else:
        assert spec.key_env in _aliases(f"{prefix}_api_key")


@pytest.mark.parametrize("spec", PROVIDERS.values(), ids=lambda spec: spec.id)
def test_platform_key_and_url_come_from_the_environment(
    spec: ProviderSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert spec.env is not None
    monkeypatch.setenv(f"{spec.env}_BASE_URL", "http://proxy.internal/v1")
    if spec.key_env is not None:
        monkeypatch.setenv(spec.key_env, f"env-key-{spec.id}")
    endpoint = resolve_endpoint(Settings(_env_file=None), spec.id, None, None)  # type: ignore[call-arg]
    assert endpoint.base_url == "http://proxy.internal/v1"
    assert endpoint.api_key == (NO_KEY if spec.keyless else f"env-key-{spec.id}")
    assert (endpoint.provider_id, endpoint.provider_name, endpoint.mode) == (
        spec.id,
        spec.name,
        spec.mode,
    )


def test_google_key_under_its_sdk_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_GENERATIVE_AI_API_KEY", "from-the-ai-sdk-name")
    endpoint = resolve_endpoint(Settings(_env_file=None), "google", None, None)  # type: ignore[call-arg]
    assert endpoint.api_key == "from-the-ai-sdk-name"


def test_platform_key_and_default_url() -> None:
    endpoint = resolve_endpoint(make(anthropic_api_key="plat"), "anthropic", None, None)
    assert (endpoint.base_url, endpoint.api_key, endpoint.user_url) == (
        "https://api.anthropic.com",
        "plat",
        False,
    )
    assert "plat" not in repr(endpoint)


def test_platform_base_url_setting() -> None:
    settings = make(openai_api_key="plat", openai_base_url="http://proxy.internal/v1")
    endpoint = resolve_endpoint(settings, "openai", None, None)
    assert endpoint.base_url == "http://proxy.internal/v1"


def test_user_key_goes_to_the_platform_url() -> None:
    endpoint = resolve_endpoint(make(openai_api_key="plat"), "openai", "mine", None)
    assert (endpoint.api_key, endpoint.user_url) == ("mine", False)


@pytest.mark.parametrize("user_key", [None, "mine"])
def test_a_user_url_never_gets_the_platform_key(user_key: str | None) -> None:
    settings = make(openai_api_key="plat", openai_base_url="http://proxy.internal/v1")
    endpoint = resolve_endpoint(settings, "openai", user_key, "http://mine:1234/v1")
    assert endpoint.base_url == "http://mine:1234/v1"
    assert endpoint.api_key == (user_key or NO_KEY)
    assert endpoint.user_url


def test_missing_key() -> None:
    with pytest.raises(LLMError) as caught:
        resolve_endpoint(make(), "google", None, None)
    assert caught.value.code == "provider_auth"
    assert caught.value.detail == (
        "No API key for Google Generative AI: set GOOGLE_API_KEY or enter a key in settings."
    )


def test_ollama_needs_no_key() -> None:
    endpoint = resolve_endpoint(make(), "ollama", None, None)
    assert endpoint.api_key == NO_KEY
    assert endpoint.mode == "json"


@pytest.mark.parametrize(
    ("status", "message", "code", "retryable"),
    [
        (401, None, "provider_auth", False),
        (403, None, "provider_auth", False),
        (400, "API key not valid", "provider_auth", False),
        (429, None, "provider_rate_limited", True),
        (500, None, "provider_unavailable", True),
        (529, None, "provider_unavailable", True),
        (408, None, "provider_timeout", True),
        (400, "bad", "provider_rejected", False),
        (402, "Insufficient credits", "provider_rejected", False),
        (404, "no such model", "provider_rejected", False),
    ],
)
def test_status_errors(status: int, message: str | None, code: str, retryable: bool) -> None:
    error = status_error("OpenAI", status, message)
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert error.detail.startswith("OpenAI")
    assert error.detail.endswith(".")


def upstream_message(body: bytes) -> str | None:
    return read_fault(body).message


def test_upstream_messages_of_each_protocol() -> None:
    assert upstream_message(b'{"error": {"message": "openai says"}}') == "openai says"
    assert upstream_message(b'{"type": "error", "error": {"message": "claude"}}') == "claude"
    assert upstream_message(b'[{"error": {"code": 400, "message": "gemini"}}]') == "gemini"
    assert upstream_message(b'{"detail": "fastapi style"}') == "fastapi style"
    assert upstream_message(b"<html>502 Bad Gateway</html>") == "<html>502 Bad Gateway</html>"
    assert upstream_message(b"") is None


def test_gemini_urls() -> None:
    base = "https://generativelanguage.googleapis.com"
    assert stream_url(base, "gemini-2.5-pro") == (
        f"{base}/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    )
    assert stream_url(f"{base}/v1/", "models/gemini-x") == (
        f"{base}/v1/models/gemini-x:streamGenerateContent?alt=sse"
    )


def test_costs() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_usd("gpt-4.1", usage) == 10.0
    cached = Usage(input_tokens=1_000_000, output_tokens=0, cache_read_tokens=1_000_000)
    assert cost_usd("claude-haiku-4-5", cached) == pytest.approx(0.10)
    assert cost_usd("somebody-elses-model", usage) == 0.0
