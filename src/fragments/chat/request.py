"""Size limits of a chat request, checked before its schema (a 413 beats a 422)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from fragments.config import Settings
from fragments.errors import FragmentsError, PayloadTooLarge
from fragments.schemas import ChatRequest
from fragments.state import get_state


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


def check_limits(obj: Any, body_bytes: int, settings: Settings) -> None:
    """413 for too many messages or parts, or over 1 MB of JSON not counting image data."""
    messages = obj.get("messages") if isinstance(obj, dict) else None
    image_chars = 0
    if isinstance(messages, list):
        if len(messages) > settings.max_messages:
            raise PayloadTooLarge(
                f"The conversation has {len(messages)} messages; at most "
                f"{settings.max_messages} are accepted.",
                code="too_many_messages",
            )
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            if len(content) > settings.max_message_parts:
                raise PayloadTooLarge(
                    f"A message has {len(content)} parts; at most "
                    f"{settings.max_message_parts} are accepted.",
                    code="too_many_parts",
                )
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image":
                    image = part.get("image")
                    if isinstance(image, str):
                        image_chars += len(image)
    if body_bytes - image_chars > settings.max_json_bytes:
        raise PayloadTooLarge(
            f"The request is larger than {_mb(settings.max_json_bytes)} without its images.",
            code="payload_too_large",
        )


async def chat_limits(request: Request) -> None:
    """Dependency of POST /api/chat. FastAPI has already read and parsed the body (both are
    cached on the request) and validates it against the schema only after dependencies."""
    settings = get_state(request).settings
    raw = await request.body()
    try:
        obj = await request.json()
    except ValueError:
        return  # FastAPI answers 400 for malformed JSON itself
    check_limits(obj, len(raw), settings)


def check_conversation(body: ChatRequest) -> None:
    """Rules the schema cannot say."""
    if body.messages[-1].role != "user":
        raise FragmentsError(
            "The last message must come from the user.", code="invalid_request", status_code=422
        )
