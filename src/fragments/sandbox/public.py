"""The JSON bodies the sandbox routes answer with (`/api/sandbox`, `/api/templates`)."""

from __future__ import annotations

from pydantic import BaseModel, RootModel

from fragments.schemas import InterpreterResult, WebResult


class SandboxResultPublic(RootModel[InterpreterResult | WebResult]):
    """A run's result: an interpreter's output, a web app's preview URL, or (no preview
    possible) a web result with no sandbox, no URL and an error. A display result lists only
    the formats it has."""


class PreparedSandboxPublic(BaseModel):
    """A conversation's sandbox, ready before its fragment runs."""

    sandbox_id: str
    template: str
    # The preview (the template's placeholder page until the fragment runs); None for the
    # interpreter.
    url: str | None


class TemplatePublic(BaseModel):
    """A template as the original app's templates.json describes it."""

    id: str
    name: str
    lib: list[str]
    file: str
    instructions: str
    port: int | None
