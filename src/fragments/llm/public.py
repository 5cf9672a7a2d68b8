"""The JSON body of `GET /api/models`: the original app's models.json entries."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelPublic(BaseModel):
    # The original's camelCase names on the wire; snake_case in Python.
    model_config = ConfigDict(populate_by_name=True)

    id: str
    name: str
    provider: str
    provider_id: str = Field(alias="providerId")
    multimodal: bool = Field(alias="multiModal")
