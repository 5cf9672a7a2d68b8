"""Requests refused before any model call: an HTTP status and `{error, detail}`, no stream."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.chat.conftest import chat_body, names, post_chat
from tests.fakes import FakeOpenAI, FragmentReply

pytestmark = pytest.mark.anyio

MB = 1024 * 1024
PNG_HEAD = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"


def png_url(size: int) -> str:
    """A data URL whose base64 part is about `size` characters."""
    return "data:image/png;base64," + PNG_HEAD + "A" * (size - len(PNG_HEAD))


def assert_refused(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str)
    return str(body["detail"])


async def test_malformed_json(client: httpx.AsyncClient, fake_openai: FakeOpenAI) -> None:
    response = await client.post(
        "/api/chat", content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    assert_refused(response, 400, "malformed_json")
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"model": {"providerId": "openai"}}, "model.id"),
        ({"config": {"temperature": 7}}, "config.temperature"),
        ({"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]}, "content"),
    ],
)
async def test_schema_errors(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, change: dict[str, object], field: str
) -> None:
    response = await client.post("/api/chat", json={**chat_body(), **change})
    detail = assert_refused(response, 422, "invalid_request")
    assert field in detail
    assert fake_openai.requests == []


async def test_the_last_message_must_be_the_users(client: httpx.AsyncClient) -> None:
    body = chat_body()
    body["messages"].append({"role": "assistant", "content": "sure"})
    response = await client.post("/api/chat", json=body)
    assert "last message" in assert_refused(response, 422, "invalid_request")


async def test_unknown_template(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/chat", json=chat_body(template="cobol-developer"))
    assert "cobol-developer" in assert_refused(response, 400, "unknown_template")


@pytest.mark.parametrize(
    "model",
    [
        {"id": "gpt-99", "providerId": "openai"},
        {"id": "gpt-4.1", "providerId": "skynet"},
        {"id": "gpt-4.1", "provider": "Skynet"},
        {"id": "nobody-knows"},
    ],
)
async def test_unknown_model(client: httpx.AsyncClient, model: dict[str, str]) -> None:
    response = await client.post("/api/chat", json={**chat_body(), "model": model})
    assert_refused(response, 400, "unknown_model")


async def test_provider_found_from_the_catalogue_when_omitted(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply())
    _, events = await post_chat(client, {**chat_body(), "model": {"id": "gpt-4.1-mini"}})
    assert names(events)[-1] == "done"


async def test_any_model_id_with_a_base_url(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply())
    body = chat_body(model="my-local-model", config={"baseURL": fake_openai.base_url})
    _, events = await post_chat(client, body)
    assert names(events)[-1] == "done"
    assert fake_openai.last_request.json["model"] == "my-local-model"


async def test_json_over_one_megabyte(client: httpx.AsyncClient, fake_openai: FakeOpenAI) -> None:
    response = await client.post("/api/chat", json=chat_body("x" * (MB + 10)))
    assert "1 MB" in assert_refused(response, 413, "payload_too_large")
    assert fake_openai.requests == []


async def test_images_do_not_count_against_the_json_limit(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    body = chat_body("what is in these?")
    body["messages"][0]["content"] += [
        {"type": "image", "image": png_url(3 * MB)},
        {"type": "image", "image": png_url(3 * MB)},
    ]
    fake_openai.script(FragmentReply())
    response, events = await post_chat(client, body)
    assert response.status_code == 200
    assert names(events)[-1] == "done"
    parts = fake_openai.last_request.json["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]


async def test_image_over_five_megabytes(client: httpx.AsyncClient) -> None:
    body = chat_body()
    body["messages"][0]["content"].append({"type": "image", "image": png_url(7 * MB)})
    response = await client.post("/api/chat", json=body)
    assert "5 MB" in assert_refused(response, 413, "image_too_large")


async def test_body_over_twenty_megabytes(client: httpx.AsyncClient) -> None:
    body = chat_body()
    body["messages"][0]["content"] += [
        {"type": "image", "image": png_url(4 * MB)} for _ in range(6)
    ]
    response = await client.post("/api/chat", json=body)
    assert_refused(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "image",
    [
        "https://example.com/cat.png",
        "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",
        "data:image/png;base64,@@@not base64@@@",
    ],
)
async def test_bad_images(client: httpx.AsyncClient, image: str) -> None:
    body = chat_body()
    body["messages"][0]["content"].append({"type": "image", "image": image})
    response = await client.post("/api/chat", json=body)
    assert_refused(response, 400, "invalid_image")


async def test_images_to_a_text_only_model(client: httpx.AsyncClient) -> None:
    body = chat_body(model="deepseek-chat", provider="deepseek")
    body["messages"][0]["content"].append({"type": "image", "image": png_url(100)})
    response = await client.post("/api/chat", json=body)
    assert_refused(response, 400, "images_not_supported")


async def test_too_many_messages(client: httpx.AsyncClient) -> None:
    body = chat_body()
    body["messages"] = [{"role": "user", "content": "hi"}] * 501
    response = await client.post("/api/chat", json=body)
    assert "501 messages" in assert_refused(response, 413, "too_many_messages")


async def test_too_many_parts(client: httpx.AsyncClient) -> None:
    body = chat_body()
    body["messages"][0]["content"] = [{"type": "text", "text": "a"}] * 101
    response = await client.post("/api/chat", json=body)
    assert "101 parts" in assert_refused(response, 413, "too_many_parts")


async def test_a_bare_string_is_one_text_part(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(FragmentReply())
    body = {**chat_body(), "messages": [{"role": "user", "content": "plain text"}]}
    _, events = await post_chat(client, body)
    assert names(events)[-1] == "done"
    assert fake_openai.last_request.json["messages"][1]["content"] == "plain text"


async def test_unknown_keys_are_ignored(client: httpx.AsyncClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(FragmentReply())
    body = chat_body(config={"shiny": True, "temperature": 0.2}, extra_field=[1, 2])
    _, events = await post_chat(client, body)
    assert names(events)[-1] == "done"
    assert fake_openai.last_request.json["temperature"] == 0.2
    assert "shiny" not in json.dumps(fake_openai.last_request.json)
