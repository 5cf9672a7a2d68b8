"""The typed application state the lifespan builds and handlers reach through dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request

from fragments.config import Settings
from fragments.llm.types import ModelStreamer
from fragments.sandbox.service import SandboxService
from fragments.store.db import Database


@dataclass
class State:
    settings: Settings
    # One pooled client for every provider call: connection reuse matters on the hot path.
    http: httpx.AsyncClient
    sandboxes: SandboxService
    # The model layer (fragments.llm); None only in states built without the app's lifespan.
    llm: ModelStreamer | None = None
    # Storage (fragments.store); None only in states built without the app's lifespan.
    db: Database | None = None


def get_state(request: Request) -> State:
    state: State = request.app.state.fragments
    return state


def get_settings(request: Request) -> Settings:
    return get_state(request).settings


StateDep = Annotated[State, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
