"""A fake Morph apply API: OpenAI chat completions (`POST /v1/chat/completions`, not streamed)
whose one user message is `<instruction>…</instruction><code>…</code><update>…</update>` and
whose answer is the merged file.

    with FakeMorph() as morph:
        morph.base_url                       # http://127.0.0.1:PORT/v1
        morph.script(MorphReply(status=500)) # the next request fails; then merges again
        morph.requests                       # RecordedRequest, as the provider fakes keep

The default reply merges for real, the way a lazy edit snippet reads: the update is cut at its
"... existing code ..." marker lines; each piece's first and last lines are found in the code
and the lines between them are replaced by the piece. `MorphReply(content=...)` answers with
given text instead (a bad merge).
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tests.fakes.base import RecordedRequest
from tests.fakes.server import ServerThread

_PART = re.compile(r"<(instruction|code|update)>(.*?)</\1>", re.DOTALL)


@dataclass
class MorphReply:
    status: int = 200
    # None: merge the update into the code; a str: answer with it as the merged code.
    content: str | None = None
    usage: bool = True
    # Seconds to wait before answering (a slow or stalled Morph).
    delay: float = 0.0


def lazy_merge(code: str, update: str) -> str:
    """The update's pieces placed between their first and last lines' matches in `code`."""
    lines = code.split("\n")
    pieces: list[list[str]] = [[]]
    for line in update.split("\n"):
        if "... existing code ..." in line:
            pieces.append([])
        else:
            pieces[-1].append(line)
    for piece in pieces:
        while piece and not piece[0].strip():
            piece.pop(0)
        while piece and not piece[-1].strip():
            piece.pop()
        if not piece:
            continue
        stripped = [x.strip() for x in lines]
        try:
            start = stripped.index(piece[0].strip())
            end = len(stripped) - 1 - stripped[::-1].index(piece[-1].strip())
        except ValueError:
            continue  # no anchor: the piece is dropped, as a careless merge would
        if end < start:
            continue
        lines = [*lines[:start], *piece, *lines[end + 1 :]]
    return "\n".join(lines)


class FakeMorph:
    def __init__(self, *, default: MorphReply | None = None) -> None:
        self.default = default or MorphReply()
        self._lock = threading.Lock()
        self._queue: collections.deque[MorphReply] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._server = ServerThread(self._app)

    def __enter__(self) -> FakeMorph:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    def script(self, *replies: MorphReply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def parts(self, index: int = -1) -> dict[str, str]:
        """The instruction, code and update of a recorded request."""
        body = self.requests[index].json
        content = body["messages"][0]["content"]
        return {m.group(1): m.group(2) for m in _PART.finditer(content)}

    def _next(self) -> MorphReply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            raw=raw,
            json=parsed,
        )
        with self._lock:
            self._requests.append(record)
        if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            await _reply(send, 404, {"error": {"message": "not found", "type": "invalid_request"}})
            return
        reply = self._next()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            error = {"error": {"message": "fake morph failure", "type": "server_error"}}
            await _reply(send, reply.status, error)
            return
        content = parsed["messages"][0]["content"]
        found = {m.group(1): m.group(2) for m in _PART.finditer(content)}
        merged = reply.content
        if merged is None:
            merged = lazy_merge(found.get("code", ""), found.get("update", ""))
        body: dict[str, Any] = {
            "id": "chatcmpl-morph",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": parsed.get("model", "morph-v3-large"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": merged},
                    "finish_reason": "stop",
                }
            ],
        }
        if reply.usage:
            prompt, completion = max(1, len(content) // 4), max(1, len(merged) // 4)
            body["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        await _reply(send, 200, body)
        record._finished.set()


async def _reply(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
