"""The OpenAPI document describes the body of every JSON answer: each JSON route names a
response model (a `$ref` to a schema), not a bare object."""

from __future__ import annotations

from typing import Any

from fragments.app import create_app
from fragments.config import Settings

# Answers that are not JSON bodies: nothing to describe.
_NO_BODY = {"204", "301", "302", "303", "307", "308"}


def _described(schema: dict[str, Any]) -> bool:
    """A named model, or a list, map or choice of named models."""
    if "$ref" in schema:
        return True
    if schema.get("type") == "array":
        return _described(schema.get("items", {}))
    if isinstance(schema.get("additionalProperties"), dict):
        return _described(schema["additionalProperties"])
    choices = schema.get("anyOf") or schema.get("oneOf")
    if choices:
        return all(_described(c) for c in choices if c.get("type") != "null")
    return False


def _undescribed(document: dict[str, Any]) -> list[str]:
    missing = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation.get("responses", {}).items():
                if not status.startswith("2") or status in _NO_BODY:
                    continue
                content = response.get("content", {})
                if set(content) == {"text/event-stream"}:
                    continue
                if content and "application/json" not in content:
                    continue  # a file (a ZIP download): not a JSON body
                schema = content.get("application/json", {}).get("schema", {})
                if not _described(schema):
                    missing.append(f"{method.upper()} {path} {status}")
    return missing


def test_every_json_route_has_a_response_model(settings: Settings) -> None:
    assert _undescribed(create_app(settings).openapi()) == []


def test_a_bare_dict_route_is_caught() -> None:
    document = {
        "paths": {
            "/x": {
                "get": {
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {
                                    "schema": {"type": "object", "additionalProperties": True}
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert _undescribed(document) == ["GET /x 200"]
