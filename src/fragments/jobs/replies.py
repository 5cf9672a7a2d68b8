"""Reading redis-py's stream replies into plain types (the client decodes to str; its type
hints cannot say so, so the shapes are checked here once)."""

from __future__ import annotations

from typing import Any, cast

StreamEntry = tuple[str, dict[str, str]]


def entries(reply: Any) -> list[StreamEntry]:
    """`[(id, {field: value}), ...]` (XRANGE, XAUTOCLAIM's second part); deleted entries,
    whose fields are None, are left out."""
    found: list[StreamEntry] = []
    for item in reply or []:
        entry_id, fields = item[0], item[1]
        if isinstance(fields, dict):
            found.append((str(entry_id), cast(dict[str, str], fields)))
    return found


def streams(reply: Any) -> list[tuple[str, list[StreamEntry]]]:
    """`[(stream, entries), ...]` from XREAD / XREADGROUP (a list, or a dict under RESP3)."""
    pairs = reply.items() if isinstance(reply, dict) else (reply or [])
    return [(str(pair[0]), entries(pair[1])) for pair in pairs]


def text(value: Any) -> str | None:
    return None if value is None else str(value)
