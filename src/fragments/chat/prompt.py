"""The system prompt, built on the server from the template registry, and the conversion of
chat messages into the model layer's neutral turns."""

from __future__ import annotations

import base64
import binascii
import re

from fragments.conversations.data_files import TEXT_KINDS, FileNote, human_size
from fragments.errors import BadRequest, PayloadTooLarge
from fragments.llm.types import ImageInput, Part, Turn
from fragments.sandbox.templates import Template
from fragments.schemas import CodePart, ImagePart, Message, TextPart

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[\w=.+-]+)*?;base64,", re.ASCII)


def describe_template(template: Template) -> str:
    """One line per template: id, file, port, what is installed, and its own instructions."""
    port = str(template.port) if template.port is not None else "none"
    return (
        f"- {template.id}: file {template.file}; port {port}; has "
        f"{', '.join(template.libraries)}. {template.instructions}"
    )


def brief_template(template: Template) -> str:
    port = f"port {template.port}" if template.port is not None else "no port"
    return f"{template.id} ({template.file}, {port})"


def mentioned(template: Template, message: str) -> bool:
    """The user's message names the template's framework (Gradio, Streamlit, Vue, Next.js,
    Python): they may be asking to switch to it, so it is described in full."""
    word = template.name.split()[0].lower().removesuffix(".js")
    return re.search(rf"\b{re.escape(word)}\b", message, re.IGNORECASE) is not None


# Every sentence here is paid for on every request (see the README's cost figures): the rules
# the sandbox depends on (whole program, paths, ports, dependencies) and nothing else. Field
# meanings live here, not in the tool schema, so they are said once.
_RULES = """You write fragments: a small runnable app or notebook cell for the user's request.
- The whole program, runnable as is; no placeholders; code as plain text (no Markdown fences).
- file_path is relative (no leading / or ..); multi-file apps fill files instead of code.
- port: the template's (null if none).
- Extra packages go in additional_dependencies, has_additional_dependencies and
install_dependencies_command (pip/npm install x); never write requirements.txt or package.json.
- commentary: brief, what you build and how; title: at most 3 words; description: one sentence."""


def system_prompt(templates: list[Template], current: str | None = None, message: str = "") -> str:
    """What the model is told before the conversation: the rules and the template(s).

    A fixed template: only that one is described. "auto" for a new app: every template in
    full. "auto" for an edit of a fragment of template `current`: that template in full, and
    the others by id, file and port (in full when `message` names their framework), since an
    edit rarely changes template and the full list is most of the prompt.
    """
    if len(templates) == 1:
        return f"{_RULES}\nTemplate:\n{describe_template(templates[0])}"
    in_use = [t for t in templates if t.id == current]
    if not in_use:
        listing = "\n".join(describe_template(t) for t in templates)
        return f"{_RULES}\nPick the template that suits best:\n{listing}"
    full = [t for t in templates if t.id == current or mentioned(t, message)]
    brief = [t for t in templates if t not in full]
    listing = "\n".join(describe_template(t) for t in full)
    text = f"{_RULES}\nTemplate in use (keep unless asked):\n{listing}"
    if brief:
        text += "\nOthers: " + ", ".join(brief_template(t) for t in brief) + "."
    return text


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


def describe_data_files(notes: list[FileNote]) -> str:
    """The system prompt's paragraph on the conversation's data files ('' when none)."""
    if not notes:
        return ""
    parts = [
        "Data files the user uploaded, in the app's working folder (read them by these "
        "relative paths; never invent their contents):"
    ]
    for note in notes:
        head = f"- {note.name} ({human_size(note.size)}, {note.kind})"
        if note.kind in TEXT_KINDS:
            parts.append(f"{head}, first lines:\n{note.preview}")
        else:
            parts.append(f"{head}: {note.preview}")
    return "\n".join(parts)
