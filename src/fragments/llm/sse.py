"""A minimal server-sent-events decoder for provider streams: bytes in, `data` payloads out.

The hot path of every answer runs through here once per network read, so it works on bytes,
splits with C-level `bytes` methods, and ignores what providers do not use (ids, retry, comments).
Event names are dropped too: every provider repeats the type inside its JSON.
"""

from __future__ import annotations


class SSEDecoder:
    __slots__ = ("_data", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of every event completed by `chunk` (multi-line data joined by LF)."""
        buf = self._pending + chunk if self._pending else chunk
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF: keep it for the next read.
            held = buf.endswith(b"\r")
            if held:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                buf += b"\r"
        lines = buf.split(b"\n")
        self._pending = lines.pop()
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    out.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        return out

    def flush(self) -> list[bytes]:
        """Whatever a stream that ended without a final blank line still held."""
        rest = self._pending.rstrip(b"\r")
        self._pending = b""
        return self._lines([rest, b""] if rest else [b""])
