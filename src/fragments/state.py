"""The typed application state the lifespan builds and handlers reach through dependencies.

Every shared object lives here, built once in the lifespan and closed there: nothing is made
lazily on first use. The services are typed by the seams they implement (`fragments.ports`,
`llm.types`), so this module imports no service package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from fragments.config import Settings
from fragments.llm.health import HealthBoard
from fragments.llm.morph import MorphClient
from fragments.llm.types import ModelStreamer
from fragments.observability.analytics import Analytics
from fragments.ports import JobBoard, ResponseStore, SandboxService
from fragments.quota.budget import UsageCache
from fragments.quota.credits import SharedPrepareCredits
from fragments.quota.limits import ChatLimiter
from fragments.redis_client import SharedRedis
from fragments.resilience import BreakerRegistry
from fragments.store.db import Database


@dataclass
class State:
    settings: Settings
    db: Database
    sandboxes: SandboxService
    llm: ModelStreamer
    # The one Redis client; None when FRAGMENTS_REDIS_URL is unset (memory serves instead).
    redis: SharedRedis | None
    limiter: ChatLimiter
    usage_cache: UsageCache
    prepare_credits: SharedPrepareCredits
    response_store: ResponseStore
    # Circuit breakers by name (providers, sandbox backends), on the same Redis client.
    breakers: BreakerRegistry
    # The providers' shared health checks (run in the background by the lifespan).
    health: HealthBoard
    # Sandbox runs and prepares as jobs: owners, replayable events, work outliving requests.
    jobs: JobBoard
    # Product analytics (PostHog); a no-op unless POSTHOG_API_KEY is set.
    analytics: Analytics = field(default_factory=Analytics)
    # Morph's fast apply for edits; None unless MORPH_API_KEY is set.
    morph: MorphClient | None = None


def get_state(request: Request) -> State:
    """The app's State (the lifespan has run: handlers only serve after it)."""
    state: State = request.app.state.fragments
    return state


def get_db(request: Request) -> Database:
    return get_state(request).db


async def _state(request: Request) -> State:
    # Async so FastAPI resolves it on the event loop, not in its thread pool.
    return get_state(request)


async def _settings(request: Request) -> Settings:
    return get_state(request).settings


StateDep = Annotated[State, Depends(_state)]
SettingsDep = Annotated[Settings, Depends(_settings)]
