"""The system prompt, built on the server from the template registry, and the conversion of
chat messages into the model layer's neutral turns."""

from __future__ import annotations

import base64
import binascii
import re

from fragments.errors import BadRequest, PayloadTooLarge
from fragments.llm.types import ImageInput, Part, Turn
from fragments.sandbox.templates import Template
from fragments.schemas import CodePart, ImagePart, Message, TextPart

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[\w=.+-]+)*?;base64,", re.ASCII)


def describe_template(index: int, template: Template) -> str:
    port = str(template.port) if template.port is not None else "none"
    return (
        f'{index}. {template.id}: "{template.instructions}" '
        f"File: {template.file}. Dependencies already installed: "
        f"{', '.join(template.libraries)}. Port: {port}."
    )


def system_prompt(templates: list[Template]) -> str:
    """What the model is told before the conversation: its role, the rules, the templates."""
    listing = "\n".join(describe_template(i, t) for i, t in enumerate(templates, 1))
    pick = (
        "Use this template:"
        if len(templates) == 1
        else "Pick the one template below that suits the request best:"
    )
    return f"""You are an experienced software engineer who writes correct, complete programs.
Answer every request by writing a fragment: one small, runnable app or notebook cell that does
what the user asked, together with a short commentary and its metadata.

Rules:
- Write the whole program, ready to run as is; never leave placeholders or "rest of the code"
  comments.
- You may need packages beyond those the template has. List them in additional_dependencies,
  set has_additional_dependencies, and give the command that installs them in
  install_dependencies_command (e.g. `pip install x` or `npm install x`).
- Do not create or change dependency files such as requirements.txt, package.json or
  package-lock.json; they are managed for you.
- Put the code in the code field as plain text: no Markdown, no backticks around it.
- Break lines where they belong and indent properly; the code field holds real line breaks.
- file_path is relative to the app's folder (no leading slash, no '..'). For an app that needs
  several files, fill files with every file's path and full content instead of code.
- Keep the commentary brief: what you will build and how.

{pick}
{listing}"""


def to_turns(messages: list[Message], *, multimodal: bool, max_image_bytes: int) -> list[Turn]:
    """Provider-neutral turns. An assistant message that carries a fragment becomes that
    fragment's JSON, so the model sees the code it wrote before."""
    turns: list[Turn] = []
    for message in messages:
        parts: list[Part] = []
        if message.role == "assistant" and message.object is not None:
            parts.append(message.object.model_dump_json(exclude_defaults=True))
        else:
            for part in message.content:
                if isinstance(part, (TextPart, CodePart)):
                    if part.text:
                        parts.append(part.text)
                elif isinstance(part, ImagePart):
                    if not multimodal:
                        raise BadRequest(
                            "This model does not accept images; remove them or pick a model "
                            "that does.",
                            code="images_not_supported",
                        )
                    parts.append(parse_image(part.image, max_image_bytes))
        if parts:
            turns.append(Turn(role=message.role, parts=tuple(parts)))
    return turns


def parse_image(url: str, max_bytes: int) -> ImageInput:
    """A base64 `data:` URL of a PNG, JPEG, GIF or WebP image, at most `max_bytes` decoded."""
    match = _DATA_URL.match(url)
    if match is None:
        raise BadRequest(
            "Images must be base64 data URLs (data:image/png;base64,...).", code="invalid_image"
        )
    media_type = match["type"].lower()
    if media_type not in IMAGE_TYPES:
        raise BadRequest(
            f"Images must be PNG, JPEG, GIF or WebP, not {media_type[:40]}.", code="invalid_image"
        )
    data = url[match.end() :]
    if len(data) // 4 * 3 > max_bytes:
        raise PayloadTooLarge(
            f"An image is larger than {max_bytes / (1024 * 1024):g} MB.", code="image_too_large"
        )
    try:
        base64.b64decode(data[:4096] + "=" * (-len(data[:4096]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("An image's base64 data is not valid.", code="invalid_image") from None
    return ImageInput(media_type=media_type, data=data)
