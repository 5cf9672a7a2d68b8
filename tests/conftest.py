"""Shared test setup: asyncio via anyio, a private data folder and settings per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# jupyter_core warns at import without this, and filterwarnings=error would make that fatal.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

from fragments.config import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    path.mkdir()
    return path


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
    )
