"""The provider SDK clients the OpenAI- and Anthropic-format wires take their URL and headers
from: cached for the platform's own endpoints, fresh for a caller's URL."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from fragments.llm.providers import Endpoint
from fragments.llm.wire import WireRequest, dumps, sdk_headers


class SdkClient(Protocol):
    """What the wires read from an `AsyncOpenAI` / `AsyncAnthropic` client."""

    @property
    def base_url(self) -> object: ...

    @property
    def default_headers(self) -> Mapping[str, object]: ...

    @property
    def auth_headers(self) -> Mapping[str, str]: ...


P = TypeVar("P")


class ProviderCache(Generic[P]):
    """Providers per endpoint. The platform's own are reused; a caller's URL gets a fresh one
    per request (cheap, and no user key outlives its request)."""

    def __init__(self, build: Callable[[Endpoint], P]) -> None:
        self._build = build
        self._cached: dict[tuple[str, str], P] = {}

    def get(self, endpoint: Endpoint) -> P:
        if endpoint.user_url:
            return self._build(endpoint)
        key = (endpoint.base_url, endpoint.api_key)
        provider = self._cached.get(key)
        if provider is None:
            provider = self._cached[key] = self._build(endpoint)
        return provider


def sdk_request(client: SdkClient, path: str, body: dict[str, Any]) -> WireRequest:
    """A streamed POST to `path` under the client's base URL, with the client's own headers."""
    url = str(client.base_url).rstrip("/") + path
    return WireRequest(url, sdk_headers(client.default_headers, client.auth_headers), dumps(body))
