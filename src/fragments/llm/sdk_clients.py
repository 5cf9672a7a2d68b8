"""The provider SDK clients the OpenAI- and Anthropic-format wires take their URL and headers
from: cached for the platform's own endpoints, fresh for a caller's URL."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import httpx2

from fragments.llm.providers import Endpoint, OutputMode
from fragments.llm.types import ModelCall
from fragments.llm.wire import WireRequest, dumps


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


def sdk_headers(default: Mapping[str, object], auth: Mapping[str, str]) -> dict[str, str]:
    """An SDK client's own headers (auth, API version, user agent), minus its omitted ones."""
    headers = {k: v for k, v in default.items() if isinstance(v, str)}
    headers.update(auth)
    headers["Accept"] = "text/event-stream"
    return headers


def sdk_request(client: SdkClient, path: str, body: dict[str, Any]) -> WireRequest:
    """A streamed POST to `path` under the client's base URL, with the client's own headers."""
    url = str(client.base_url).rstrip("/") + path
    return WireRequest(url, sdk_headers(client.default_headers, client.auth_headers), dumps(body))


class SdkProvider(Protocol):
    """A pydantic-ai provider around an SDK client (`OpenAIProvider`, `AnthropicProvider`)."""

    @property
    def client(self) -> SdkClient: ...


S = TypeVar("S", bound=SdkProvider)


class SdkWire(abc.ABC, Generic[S]):
    """A wire whose requests take their URL and headers from a provider SDK's client, built on
    the streamer's pooled HTTP client and cached per endpoint."""

    # The streamed endpoint, under the client's base URL.
    path: ClassVar[str]

    def __init__(self, http: httpx2.AsyncClient) -> None:
        self._http = http
        self._providers = ProviderCache(self._new_provider)

    @abc.abstractmethod
    def _new_provider(self, endpoint: Endpoint) -> S:
        """A provider for this endpoint's URL and key (no SDK retries: ours come first)."""

    @abc.abstractmethod
    def body(self, call: ModelCall, endpoint: Endpoint, mode: OutputMode) -> dict[str, Any]:
        """The JSON body asking for a streamed answer."""

    def request(self, call: ModelCall, endpoint: Endpoint, mode: OutputMode) -> WireRequest:
        client = self._providers.get(endpoint).client
        return sdk_request(client, self.path, self.body(call, endpoint, mode))
