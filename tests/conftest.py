"""Shared test setup: asyncio via anyio, a private data folder and settings per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

# jupyter_core warns at import without this, and filterwarnings=error would make that fatal.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

from fragments.config import Settings
from tests.databases import (
    APP_ROLE,
    PgDatabase,
    copy_sqlite,
    create_pg_database,
    drop_pg_database,
    migrated_sqlite,
)
from tests.modes import AUTH_MODES, AuthMode, mode_settings, sign_in_for_mode

Backend = str  # "sqlite" | "postgresql"
# A developer's own telemetry settings must not send a test's traces, errors or events anywhere.
NO_TELEMETRY: dict[str, object] = {
    "tracing": None,
    "otel_exporter_otlp_endpoint": None,
    "otel_exporter_otlp_traces_endpoint": None,
    "sentry_dsn": None,
    "posthog_api_key": None,
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that depends on `auth_mode` runs in both modes unless it names its modes."""
    if "auth_mode" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("auth_modes")
    modes = marker.args if marker is not None else AUTH_MODES
    metafunc.parametrize("auth_mode", modes, indirect=True)


@pytest.fixture
def auth_mode(request: pytest.FixtureRequest) -> AuthMode:
    """`guests` (development defaults) or `production` (guests off, strict checks)."""
    mode: AuthMode = request.param
    return mode


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_sqlite(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PgDatabase | None]:
    """One fresh PostgreSQL database for the run, or None when the server is unreachable."""
    try:
        db = create_pg_database()
    except (OSError, ConnectionError) as exc:
        print(f"PostgreSQL at 127.0.0.1:5432 is unreachable ({exc}); its tests are skipped")
        yield None
        return
    try:
        yield db
    finally:
        drop_pg_database(db)


@pytest.fixture
def data_dir(tmp_path: Path, sqlite_template: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    path.mkdir()
    # Already migrated: the app's start-up migration finds nothing to do.
    copy_sqlite(sqlite_template, path)
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, pg_database: PgDatabase | None) -> Backend:
    if request.param == "postgresql" and pg_database is None:
        pytest.skip(
            "PostgreSQL at 127.0.0.1:5432 is unreachable (it runs on the dev and CI machines)"
        )
    return str(request.param)


def database_settings(backend: Backend, pg: PgDatabase | None) -> dict[str, object]:
    """Settings fields pointing the app at the backend (PostgreSQL as its RLS-bound app role)."""
    if backend == "sqlite":
        return {}
    assert pg is not None
    return {
        "database_url": pg.app_url,
        "database_migration_url": pg.owner_url,
        "database_app_role": APP_ROLE,
    }


@pytest.fixture
def db_settings(
    data_dir: Path, backend: Backend, pg_database: PgDatabase | None, auth_mode: AuthMode
) -> Settings:
    """Settings isolated like `settings`, on the parametrised database backend and mode."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        anthropic_api_key=None,
        openai_api_key=None,
        openai_base_url=None,
        anthropic_base_url=None,
        google_api_key=None,
        **NO_TELEMETRY,  # type: ignore[arg-type]
        **database_settings(backend, pg_database),  # type: ignore[arg-type]
        **mode_settings(auth_mode),  # type: ignore[arg-type]
    )


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """Settings isolated from the developer's environment: no platform keys leak in."""
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        anthropic_api_key=None,
        openai_api_key=None,
        openai_base_url=None,
        anthropic_base_url=None,
        google_api_key=None,
        **NO_TELEMETRY,  # type: ignore[arg-type]
    )


@pytest.fixture
async def api_app(db_settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running on the parametrised database (its State:
    `fragments.app.state_of(api_app)`)."""
    from fragments.app import create_app

    app = create_app(db_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def api(api_app: FastAPI, auth_mode: AuthMode) -> AsyncIterator[httpx.AsyncClient]:
    """`api_app` behind an in-process client (signed in by default in production mode)."""
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await sign_in_for_mode(client, auth_mode)
        yield client
