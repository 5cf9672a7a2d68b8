"""Collects one cell's iopub messages into an InterpreterResult, within an output cap."""

from __future__ import annotations

import re
from typing import Any

from fragments.schemas import ExecutionError, RichResult

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")

# MIME types a RichResult carries, by field (first match wins).
_MIME_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("png", ("image/png",)),
    ("jpeg", ("image/jpeg",)),
    ("svg", ("image/svg+xml",)),
    ("html", ("text/html",)),
    ("markdown", ("text/markdown",)),
    ("text", ("text/plain",)),
    ("json_", ("application/json", "application/vnd.plotly.v1+json")),
)


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _mb(n: int) -> str:
    mb = n / (1024 * 1024)
    return f"{mb:.1f} MB" if mb < 10 else f"{mb:.0f} MB"


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    return len(repr(value))


class OutputCollector:
    """Streams and display results of one run, each stream capped at `cap` characters.

    Beyond the cap, output is counted, not kept; `flooded` turns true once a stream has gone
    far past it, so the caller can stop the cell instead of shipping hundreds of MB for nothing.
    """

    def __init__(self, cap: int, flood_factor: int = 8) -> None:
        self.cap = cap
        self.flood_limit = cap * flood_factor
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.results: list[RichResult] = []
        self.error: ExecutionError | None = None
        self._kept = {"stdout": 0, "stderr": 0, "results": 0}
        self._dropped = {"stdout": 0, "stderr": 0, "results": 0}
        self._dropped_results = 0
        self.unknown_drop = False

    @property
    def flooded(self) -> bool:
        return any(v > self.flood_limit for v in self._dropped.values())

    def stream(self, name: str, text: str) -> None:
        key = "stderr" if name == "stderr" else "stdout"
        chunks = self.stderr if key == "stderr" else self.stdout
        # Characters, as the kernel counts them (the same as bytes for ASCII text).
        room = self.cap - self._kept[key]
        if len(text) <= room:
            self._kept[key] += len(text)
            # Consecutive small writes arrive as separate messages; keep them as they came.
            chunks.append(text)
            return
        if room > 0:
            chunks.append(text[:room])
            self._kept[key] += room
        self._dropped[key] += len(text) - max(room, 0)

    def display(self, data: dict[str, Any], *, main: bool) -> None:
        result = RichResult(is_main_result=main)
        size = 0
        for field_name, mimes in _MIME_FIELDS:
            for mime in mimes:
                if mime in data:
                    value = data[mime]
                    if isinstance(value, list) and field_name != "json_":
                        value = "".join(str(v) for v in value)
                    if isinstance(value, str) and field_name in ("png", "jpeg"):
                        value = value.strip()
                    setattr(result, field_name, value)
                    size += _size(value)
                    break
        if size == 0 and not data:
            return
        if self._kept["results"] + size > self.cap:
            self._dropped["results"] += size
            self._dropped_results += 1
            return
        self._kept["results"] += size
        self.results.append(result)

    def set_error(self, name: str, value: str, traceback: list[str]) -> None:
        # Frames of the sandbox's own kernel script are noise for whoever reads the error.
        frames = [strip_ansi(line) for line in traceback]
        text = "\n".join(f for f in frames if not f.lstrip().startswith("File /opt/fragments/"))
        self.error = ExecutionError(name=name, value=strip_ansi(value), traceback=text)

    def finish(self) -> None:
        """Append the truncation notices (once, at the end of each stream)."""
        for key, chunks in (("stdout", self.stdout), ("stderr", self.stderr)):
            dropped = self._dropped[key]
            if dropped:
                chunks.append(f"\n[output truncated: {_mb(dropped)} more not shown]\n")
            elif self.unknown_drop and key == "stdout":
                chunks.append("\n[output truncated: more output not shown]\n")
        if self._dropped_results:
            self.stderr.append(
                f"\n[display output truncated: {self._dropped_results} more results "
                f"({_mb(self._dropped['results'])}) not shown]\n"
            )
