"""E2B's cell output mapped onto our InterpreterResult, shaped exactly as the local backend
shapes a kernel's: the same collector caps streams and results, strips ANSI codes from errors
and keeps display results in order with only the formats our wire type carries."""

from __future__ import annotations

from typing import Any

from fragments.sandbox.e2b.sdk import CellError, CellResult, Execution, OutputMessage
from fragments.sandbox.local.output import OutputCollector
from fragments.schemas import ExecutionError, InterpreterResult

# Result attribute -> the MIME type the collector files it under (its field order decides).
_FORMATS: tuple[tuple[str, str], ...] = (
    ("png", "image/png"),
    ("jpeg", "image/jpeg"),
    ("svg", "image/svg+xml"),
    ("html", "text/html"),
    ("markdown", "text/markdown"),
    ("text", "text/plain"),
    ("json", "application/json"),
)


def mime_bundle(result: CellResult) -> dict[str, Any]:
    """A Result as the MIME bundle a kernel would have sent (only the formats we carry)."""
    bundle: dict[str, Any] = {}
    for attribute, mime in _FORMATS:
        value = getattr(result, attribute, None)
        if value is not None:
            bundle[mime] = value
    return bundle


class CellOutput:
    """Collects one cell's output, streamed (so a run that dies midway keeps what it printed)
    or from the finished Execution."""

    def __init__(self, cap: int) -> None:
        self.collector = OutputCollector(cap)

    def on_stdout(self, message: OutputMessage) -> None:
        self.collector.stream("stdout", message.line)

    def on_stderr(self, message: OutputMessage) -> None:
        self.collector.stream("stderr", message.line)

    def fail(self, error: ExecutionError) -> None:
        self.collector.error = error

    def add_execution(self, execution: Execution, *, streamed: bool) -> None:
        """Fold in a finished Execution; its logs only when they did not stream in already."""
        if not streamed:
            for text in execution.logs.stdout:
                self.collector.stream("stdout", text)
            for text in execution.logs.stderr:
                self.collector.stream("stderr", text)
        for result in execution.results:
            bundle = mime_bundle(result)
            if bundle:
                self.collector.display(bundle, main=bool(result.is_main_result))
        if execution.error is not None:
            self._set_error(execution.error)

    def _set_error(self, error: CellError) -> None:
        self.collector.set_error(error.name, error.value, str(error.traceback).splitlines())

    def result(self, sandbox_id: str, template: str) -> InterpreterResult:
        collector = self.collector
        collector.finish()
        return InterpreterResult(
            sandbox_id=sandbox_id,
            template=template,
            stdout=collector.stdout,
            stderr=collector.stderr,
            error=collector.error,
            results=collector.results,
        )
