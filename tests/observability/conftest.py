"""Observability test set-up: the chat tests' fake providers and settings, and the app's log
lines as parsed JSON objects."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fragments.observability.logs import configure_logging
from tests.chat.conftest import (
    _anthropic_server,
    _gemini_server,
    _openai_server,
    chat_settings,
    fake_anthropic,
    fake_gemini,
    fake_openai,
)

__all__ = [
    "_anthropic_server",
    "_gemini_server",
    "_openai_server",
    "chat_settings",
    "fake_anthropic",
    "fake_gemini",
    "fake_openai",
]


class LogLines:
    """What the app printed on stdout during the test, read as JSON lines: `read` gives the
    lines since the last `clear`; `raw` keeps all the text."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.raw = ""
        self.lines: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        new = self._capsys.readouterr().out
        self.raw += new
        for line in new.splitlines():
            if line.startswith("{"):
                value = json.loads(line)  # every line the app prints is one JSON object
                assert isinstance(value, dict)
                self.lines.append(value)
        return self.lines

    def clear(self) -> None:
        self.read()
        self.lines = []

    def events(self, name: str) -> list[dict[str, Any]]:
        """The lines of one event since the last `clear`."""
        return [line for line in self.read() if line.get("event") == name]


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> LogLines:
    configure_logging()  # as the app does; once a process
    return LogLines(capsys)
