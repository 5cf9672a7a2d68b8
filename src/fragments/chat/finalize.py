"""Checking the model's final answer before it is sent as the `fragment` event."""

from __future__ import annotations

from pydantic import ValidationError

from fragments.errors import BadRequest
from fragments.fragment_rules import fragment_files
from fragments.llm.errors import LLMError
from fragments.llm.types import StreamResult
from fragments.sandbox.templates import TEMPLATES, Template
from fragments.schemas import Fragment


def _invalid(detail: str) -> LLMError:
    return LLMError("invalid_output", detail)


def _parse(text: str) -> Fragment:
    try:
        return Fragment.model_validate_json(text)
    except ValidationError:
        # Some models wrap JSON content in prose or a code fence; take the outermost object.
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise
        return Fragment.model_validate_json(text[start : end + 1])


def parse_fragment(text: str) -> Fragment | None:
    """The answer read as a fragment (no checks of its content), or None when it is not one."""
    try:
        return _parse(text)
    except ValidationError:
        return None


def finalize(text: str, result: StreamResult, pinned: Template | None) -> Fragment:
    """The validated fragment, or `LLMError("invalid_output")` with a sentence saying why."""
    try:
        fragment = _parse(text)
    except ValidationError:
        if result.truncated:
            raise _invalid(
                "The answer hit the model's output limit before it was complete; raise max "
                "tokens or ask for something smaller."
            ) from None
        if result.stop_reason and result.stop_reason.upper() not in (
            "STOP",
            "END_TURN",
            "TOOL_USE",
            "TOOL_CALLS",
        ):
            raise _invalid(
                f"The model stopped ({result.stop_reason}) before writing a complete answer."
            ) from None
        raise _invalid("The model's answer was not a valid fragment (malformed JSON).") from None
    if pinned is not None:
        fragment.template = pinned.id
    template = TEMPLATES.get(fragment.template)
    if template is None:
        shown = fragment.template[:60] or "none"
        raise _invalid(f"The model picked a template that does not exist ({shown}).")
    if not fragment.code.strip() and not any(f.file_content.strip() for f in fragment.files):
        raise _invalid("The model's answer has no code.")
    try:
        fragment_files(fragment)
    except BadRequest as exc:
        detail = exc.detail[:1].lower() + exc.detail[1:]
        raise _invalid(f"The model's answer is unsafe to run: {detail}") from None
    if not fragment.file_path and not fragment.files:
        fragment.file_path = template.file
    if fragment.port is None and template.port is not None:
        fragment.port = template.port
    return fragment
