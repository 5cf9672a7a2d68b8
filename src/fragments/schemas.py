"""Shared wire types: the Fragment a model writes, chat requests, and sandbox results."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator


class FileEntry(BaseModel):
    """One file of a multi-file fragment."""

    file_path: str = ""
    file_content: str = ""


class Fragment(BaseModel):
    """What the model writes. Every field has a default so a partial validates from the first
    chunk; `code` stays last so the commentary and metadata stream before the program."""

    model_config = ConfigDict(extra="ignore")

    commentary: str = Field(
        "", description="Describe what you are about to do and the steps you take to build it."
    )
    template: str = Field("", description="Id of the template this fragment uses.")
    title: str = Field("", description="Short title of the fragment, at most 3 words.")
    description: str = Field("", description="Short description of the fragment, one sentence.")
    additional_dependencies: list[str] = Field(
        default_factory=list,
        description="Packages needed beyond those the template already has.",
    )
    has_additional_dependencies: bool = Field(
        False, description="Whether additional dependencies are needed."
    )
    install_dependencies_command: str = Field(
        "", description="Command to install the additional dependencies, e.g. `pip install x`."
    )
    port: int | None = Field(None, description="Port the app listens on; null for none.")
    file_path: str = Field("", description="Relative path of the file, including its name.")
    files: list[FileEntry] = Field(
        default_factory=list,
        description="For multi-file apps only: every file with its path and full content.",
    )
    code: str = Field("", description="The full code of the file at file_path. Runnable as is.")


# ---- chat request -----------------------------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class CodePart(BaseModel):
    type: Literal["code"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image"]
    image: str = Field(description="A data: URL (base64).")


MessagePart = Annotated[TextPart | CodePart | ImagePart, Field(discriminator="type")]


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: list[MessagePart]
    object: Fragment | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _string_content(cls, value: Any) -> Any:
        # A bare string is the obvious shorthand for one text part; accept it.
        if isinstance(value, str):
            return [{"type": "text", "text": value}]
        return value


class ModelRef(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str = Field(min_length=1)
    provider_id: str | None = Field(
        None, validation_alias=AliasChoices("providerId", "provider_id")
    )
    provider: str | None = None
    name: str | None = None


class LLMConfig(BaseModel):
    """Per-request model settings; the original client's camelCase names are accepted too."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api_key: str | None = Field(None, validation_alias=AliasChoices("api_key", "apiKey"))
    base_url: str | None = Field(
        None, validation_alias=AliasChoices("base_url", "baseURL", "baseUrl")
    )
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1, validation_alias=AliasChoices("top_p", "topP"))
    top_k: int | None = Field(None, ge=0, validation_alias=AliasChoices("top_k", "topK"))
    max_tokens: int | None = Field(
        None, gt=0, le=200_000, validation_alias=AliasChoices("max_tokens", "maxTokens")
    )
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2, validation_alias=AliasChoices("frequency_penalty", "frequencyPenalty")
    )
    presence_penalty: float | None = Field(
        None, ge=-2, le=2, validation_alias=AliasChoices("presence_penalty", "presencePenalty")
    )
    routing: Literal["auto", "off"] | None = None
    # The caller's own failover chain, tried in order after `model` when a provider fails
    # (replaces the platform's chain; [] turns failover off). With the caller's own key or
    # base URL, only models of the same provider, reached with that key and URL.
    fallback_models: list[ModelRef] | None = Field(
        None, max_length=4, validation_alias=AliasChoices("fallback_models", "fallbackModels")
    )
    # Ask the model again even when the response cache holds an answer to this very request.
    regenerate: bool = False

    @field_validator("api_key", "base_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # The original client sends "" for fields the user left empty.
        if isinstance(value, str) and not value.strip():
            return None
        return value


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[Message] = Field(min_length=1)
    template: str = "auto"
    model: ModelRef
    config: LLMConfig = Field(default_factory=LLMConfig)
    conversation_id: str | None = Field(None, max_length=64)
    # Client-made id of this turn: saving it again (POST .../turns) is idempotent on it.
    turn_id: str | None = Field(None, max_length=64)


# ---- sandbox ----------------------------------------------------------------------------------


class ExecutionError(BaseModel):
    name: str
    value: str
    traceback: str = ""


class RichResult(BaseModel):
    """One display output of a cell, as E2B reports it: images are base64 without a prefix."""

    model_config = ConfigDict(extra="ignore")

    png: str | None = None
    jpeg: str | None = None
    svg: str | None = None
    html: str | None = None
    markdown: str | None = None
    text: str | None = None
    json_: Any | None = Field(None, alias="json", serialization_alias="json")
    is_main_result: bool = False


class Notice(BaseModel):
    """Something the user should know about a run that is not an error of their code."""

    # sandbox_restarted: the conversation's sandbox was lost (its node stopped) and this run
    # started a new one, so variables and files of earlier runs are gone.
    code: Literal["sandbox_restarted"]
    detail: str


class InterpreterResult(BaseModel):
    sandbox_id: str
    template: str
    stdout: list[str] = Field(default_factory=list)
    stderr: list[str] = Field(default_factory=list)
    error: ExecutionError | None = None
    results: list[RichResult] = Field(default_factory=list)
    # Only on the wire when set (see `sandbox.runs.result_body`).
    notice: Notice | None = None


class WebResult(BaseModel):
    sandbox_id: str | None
    template: str
    url: str | None
    error: ExecutionError | None = None
    notice: Notice | None = None


class SandboxRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    fragment: Fragment | None = None
    conversation_id: str | None = None
    fragment_id: str | None = None
    restart: bool = False
