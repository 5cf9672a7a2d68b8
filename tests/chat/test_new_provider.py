"""Adding a provider is one record: a made-up OpenAI-compatible provider ("acme"), registered
as a spec with one catalogue entry, answers a chat end to end against the fake at the wire."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest

from fragments.llm import catalogue
from fragments.llm.providers import PROVIDERS, ProviderSpec
from fragments.llm.types import ProviderId
from tests.chat.conftest import chat_body, names, post_chat, received_key
from tests.fakes import FakeOpenAI, FragmentReply
from tests.fakes.sample import SAMPLE_FRAGMENT

pytestmark = pytest.mark.anyio

ACME = cast(ProviderId, "acme")


@pytest.fixture
def acme(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The record, and the catalogue entry a provider brings in llm/models.json."""
    spec = ProviderSpec(ACME, "Acme AI", "openai", fake_openai.base_url, env=None)
    monkeypatch.setitem(PROVIDERS, ACME, spec)
    models = json.loads(catalogue.CATALOGUE_FILE.read_text())
    models["models"].append(
        {
            "id": "acme-coder",
            "name": "Acme Coder",
            "provider": "Acme AI",
            "providerId": "acme",
            "multiModal": False,
        }
    )
    path = tmp_path / "models.json"
    path.write_text(json.dumps(models))
    monkeypatch.setattr(catalogue, "CATALOGUE_FILE", path)
    catalogue.load_catalogue.cache_clear()
    yield
    catalogue.load_catalogue.cache_clear()


async def test_a_new_provider_is_one_record(
    acme: None, client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    listed = (await client.get("/api/models")).json()
    assert {
        "id": "acme-coder",
        "name": "Acme Coder",
        "provider": "Acme AI",
        "providerId": "acme",
        "multiModal": False,
    } in listed

    fake_openai.script(FragmentReply(chunk_size=24))
    body = chat_body(model="acme-coder", provider="acme", config={"api_key": "acme-user-key"})
    response, events = await post_chat(client, body)

    assert response.status_code == 200, response.text
    assert names(events)[0] == "provider"
    assert names(events)[-3:] == ["fragment", "usage", "done"]
    assert events[0].data == {"provider": "acme", "model": "acme-coder", "fallback": False}
    assert events[-3].data == {**SAMPLE_FRAGMENT, "files": []}
    sent = fake_openai.last_request
    assert sent.path == "/v1/chat/completions"
    assert received_key(sent) == "acme-user-key"
    assert sent.json["model"] == "acme-coder"
    assert sent.json["tools"][0]["function"]["name"] == "fragment"


async def test_a_new_provider_is_found_by_its_display_name(
    acme: None, client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply(chunk_size=24))
    body = chat_body(model="acme-coder", provider=None, config={"api_key": "k"})
    body["model"]["provider"] = "acme ai"
    _, events = await post_chat(client, body)
    assert events[0].data["provider"] == "acme"
    assert names(events)[-1] == "done"


async def test_a_new_provider_without_a_key_says_which(
    acme: None, client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    _, events = await post_chat(client, chat_body(model="acme-coder", provider="acme"))
    assert events[-1].name == "error"
    assert events[-1].data["error"] == "provider_auth"
    assert "Acme AI" in events[-1].data["detail"]
    assert fake_openai.requests == []
