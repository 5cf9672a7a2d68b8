"""Following a sandbox job on the State's job board: its events from any event id until its
result or its error, and their public shapes (what SSE and `/api/ws` send). The producers are
`runs.py` (embedded) or the fleet's nodes; see `fragments.ports.JobBoard`."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fragments.ports import JobBoard, JobEventView

START = "0-0"
# Job ids are ours (hex); anything else a client sends is refused before it reaches a key.
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# An event id as the stores make them (`<ms>-<n>`).
EVENT_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def new_job_id() -> str:
    return secrets.token_hex(12)


async def follow_job(
    board: JobBoard, job_id: str, *, after: str = START, within: float
) -> AsyncIterator[JobEventView]:
    """The job's events after `after` until its terminal one; TimeoutError when that has not
    come within `within` seconds in all."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"job {job_id} did not finish in {within:.0f} s")
        for event in await board.read(job_id, after, min(left, 5.0)):
            after = event.id
            yield event
            if event.terminal:
                return


def public_error(data: dict[str, Any]) -> dict[str, str]:
    """A job's error as the HTTP API's error body, `{error, detail}` (a node's error event also
    carries its HTTP status and headers, which stay inside)."""
    return {
        "error": str(data.get("error") or "internal"),
        "detail": str(data.get("detail") or "The sandbox job failed."),
    }


def event_time(event_id: str) -> str:
    """When an event was published (its id starts with the milliseconds), ISO 8601 in UTC."""
    millis = int(event_id.partition("-")[0] or 0)
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
