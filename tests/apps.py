"""The app under test: its lifespan running, behind an in-process client, with services
injected through `create_app` (never patched into a live app).

    async with app_client(settings, sandboxes=FakeSandboxes()) as client:
        ...
        client_state(client).db      # the State the app built (its db, limiter, ...)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from weakref import WeakKeyDictionary

import httpx
from fastapi import FastAPI

from fragments.app import create_app, state_of
from fragments.config import Settings
from fragments.llm.types import ModelStreamer
from fragments.ports import SandboxService
from fragments.state import State

# The app each client of `app_client` talks to, so a test can reach its State.
_APPS: WeakKeyDictionary[httpx.AsyncClient, FastAPI] = WeakKeyDictionary()


@asynccontextmanager
async def app_client(
    settings: Settings,
    *,
    sandboxes: SandboxService | None = None,
    llm: ModelStreamer | None = None,
    client: tuple[str, int] = ("127.0.0.1", 123),
) -> AsyncIterator[httpx.AsyncClient]:
    """An app built from `settings` (and the given services), lifespan running; `client` is
    the address requests come from."""
    app = create_app(settings, sandboxes=sandboxes, llm=llm)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            _APPS[http] = app
            yield http


def client_state(client: httpx.AsyncClient) -> State:
    """The State of the app `client` was opened on by `app_client`."""
    return state_of(_APPS[client])
