"""`/api/ws`: the live status of the caller's sandbox jobs over a WebSocket (docs/websocket.md).

Authentication is the API's own bearer token, sent in the socket's first message (`{"type":
"auth", "token"}`), or in an `Authorization` header by clients that can set one. Browsers cannot
set headers on a WebSocket; a token in the URL (`?token=`) would land in access logs, proxy logs
and the browser's history, and one smuggled in `Sec-WebSocket-Protocol` is echoed back in the
handshake and logged by proxies as a header: the first message is the one place that is
neither. The token is never logged.

Then `{"type": "subscribe", "job_id", "after"?}` replays the job's events after `after` (the
last event id the client saw; all of them without it) and pushes the new ones until its result
or error. Only the user who started the job, acting for the same team, may follow it: any other
job id gets the same `not_found` error frame as an unknown one. Every subscribe checks the token
again, so a socket does not outlive its sign-out, session or team membership."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from fragments.auth.deps import principal_for_token
from fragments.errors import FragmentsError
from fragments.ports import JobEventView, JobOwner
from fragments.principal import Principal
from fragments.sandbox.live import (
    EVENT_ID,
    JOB_ID,
    START,
    event_time,
    follow_job,
    public_error,
)
from fragments.state import State

log = structlog.get_logger(__name__)

router = APIRouter()

# The first message must come this soon (a socket that never authenticates is closed).
AUTH_TIMEOUT_SECONDS = 10.0
# Client frames are small JSON objects; a token is well under 4 KB too.
MAX_FRAME_CHARS = 8192
MAX_SUBSCRIPTIONS = 16
# Close codes (RFC 6455 leaves 4000-4999 to applications): 4401 not authenticated.
CLOSE_UNAUTHENTICATED = 4401
_FOLLOW_MARGIN_SECONDS = 60.0
_NOT_FOUND = "There is no such job (or it has expired)."


class LiveSocket:
    """One client's socket: its caller, its subscriptions, and one sender at a time."""

    def __init__(self, websocket: WebSocket, state: State) -> None:
        self.websocket = websocket
        self.state = state
        self.who: Principal | None = None
        self._token: str | None = None
        self.follows: dict[str, asyncio.Task[None]] = {}
        self._sending = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        async with self._sending:
            await self.websocket.send_text(json.dumps(frame))

    async def error(self, code: str, detail: str, job_id: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "error", "error": code, "detail": detail}
        if job_id is not None:
            frame["job_id"] = job_id
        await self.send(frame)

    async def receive(self) -> dict[str, Any] | None:
        """The next client frame as a JSON object; None (after an error frame) if it is not."""
        text = await self.websocket.receive_text()
        if len(text) > MAX_FRAME_CHARS:
            await self.error("invalid_message", f"A frame may hold {MAX_FRAME_CHARS} characters.")
            return None
        try:
            frame = json.loads(text)
        except ValueError:
            await self.error("invalid_message", "Send each frame as one JSON object.")
            return None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self.error("invalid_message", 'Send JSON objects with a "type".')
            return None
        return frame

    # ---- authentication ------------------------------------------------------------------

    async def authenticate(self) -> bool:
        """Resolve the caller from the handshake's Authorization header or the first frame;
        on failure an error frame, then the socket is closed with 4401."""
        header = self.websocket.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        found: str | None = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if found is None:
            try:
                async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
                    first = await self.receive()
            except TimeoutError:
                return await self._refuse(
                    "unauthorized", 'Send {"type": "auth", "token": ...} first.'
                )
            if first is None:
                return await self._refuse("unauthorized", "The first frame was not valid.")
            if first.get("type") != "auth":
                return await self._refuse(
                    "unauthorized", 'Send {"type": "auth", "token": ...} first.'
                )
            value = first.get("token")
            found = value.strip() if isinstance(value, str) and value.strip() else None
        try:
            who = await principal_for_token(self.state, found)
        except FragmentsError as exc:
            return await self._refuse(exc.code, exc.detail)
        if who.anonymous:
            # Anonymous callers' jobs have no owner anyone could prove to be again.
            return await self._refuse("unauthorized", "Sign in or start a guest session first.")
        self.who, self._token = who, found
        await self.send({"type": "ready"})
        return True

    async def _refuse(self, code: str, detail: str) -> bool:
        await self.error(code, detail)
        await self.websocket.close(CLOSE_UNAUTHENTICATED, code)
        return False

    async def still_signed_in(self) -> bool:
        """Check the socket's token again, as every HTTP request is: a socket may outlive a
        sign-out, a revoked session, a removal from the team or the token's expiry. A refused
        token closes the socket with 4401 (the client signs in again on a new one)."""
        try:
            self.who = await principal_for_token(self.state, self._token)
        except FragmentsError as exc:
            if exc.status_code == 401:
                await self._refuse(exc.code, exc.detail)
                return False
            # The database cannot tell (an API token while it is down): the caller it named at
            # sign-in stands, as a JWT's does offline.
            log.warning("live_token_recheck_failed", error=exc.code)
        return True

    # ---- subscriptions -------------------------------------------------------------------

    async def serve(self) -> None:
        while True:
            frame = await self.receive()
            if frame is None:
                continue
            kind = frame["type"]
            if kind == "subscribe":
                if not await self.still_signed_in():
                    return
                await self.subscribe(frame)
            elif kind == "unsubscribe":
                job_id = frame.get("job_id")
                task = self.follows.pop(job_id, None) if isinstance(job_id, str) else None
                if task is not None:
                    task.cancel()
            elif kind == "ping":
                await self.send({"type": "pong"})
            elif kind == "auth":
                await self.error("invalid_message", "This socket is signed in already.")
            else:
                await self.error("invalid_message", f"Unknown frame type '{kind[:40]}'.")

    async def subscribe(self, frame: dict[str, Any]) -> None:
        job_id, after = frame.get("job_id"), frame.get("after") or START
        if not isinstance(job_id, str) or JOB_ID.match(job_id) is None:
            await self.error("invalid_message", "Send the 'job_id' to follow.")
            return
        if not isinstance(after, str) or EVENT_ID.match(after) is None:
            await self.error(
                "invalid_message", "'after' is an event id as sent in 'id'.", job_id=job_id
            )
            return
        if job_id in self.follows:
            self.follows.pop(job_id).cancel()  # again, from a new point
        if len(self.follows) >= MAX_SUBSCRIPTIONS:
            await self.error(
                "too_many_subscriptions",
                f"Follow at most {MAX_SUBSCRIPTIONS} jobs on one socket.",
                job_id=job_id,
            )
            return
        try:
            owner = await self.state.jobs.owner(job_id)
        except Exception:
            log.warning("live_job_owner_failed", job_id=job_id, exc_info=True)
            await self.error(
                "fleet_unavailable", "The job's status cannot be read right now.", job_id=job_id
            )
            return
        if not _owns(self.who, owner):
            await self.error("not_found", _NOT_FOUND, job_id=job_id)
            return
        task = asyncio.create_task(self.follow(job_id, after))
        self.follows[job_id] = task
        task.add_done_callback(lambda _t: self._forget(job_id, task))

    def _forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self.follows.get(job_id) is task:
            del self.follows[job_id]

    async def follow(self, job_id: str, after: str) -> None:
        within = self.state.settings.job_wait_seconds + _FOLLOW_MARGIN_SECONDS
        try:
            async for event in follow_job(self.state.jobs, job_id, after=after, within=within):
                await self.send(frame_of(job_id, event))
        except TimeoutError:
            await self.error(
                "sandbox_unavailable", "The sandbox did not answer in time.", job_id=job_id
            )
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the socket closed while sending (uvicorn's ClientDisconnected is an OSError)
        except Exception:
            log.warning("live_follow_failed", job_id=job_id, exc_info=True)
            with contextlib.suppress(Exception):
                await self.error(
                    "fleet_unavailable", "The job's status cannot be read right now.", job_id
                )

    async def aclose(self) -> None:
        for task in self.follows.values():
            task.cancel()
        for task in list(self.follows.values()):
            with contextlib.suppress(BaseException):
                await task


def _owns(who: Principal | None, owner: JobOwner | None) -> bool:
    return (
        who is not None
        and owner is not None
        and who.user_id == owner.user_id
        and who.team_id == owner.team_id
    )


def frame_of(job_id: str, event: JobEventView) -> dict[str, Any]:
    """A job event as a frame: `phase`, `result` (the result's JSON, as POST /api/sandbox
    answers it, beside `type`, `job_id`, `id`, `at`) or `error` (`error`, `detail`)."""
    head: dict[str, Any] = {"job_id": job_id, "id": event.id, "at": event_time(event.id)}
    if event.type == "phase":
        return {"type": "phase", **head, "phase": event.data.get("phase")}
    if event.type == "result":
        return {**event.data, "type": "result", **head}
    return {"type": "error", **head, **public_error(event.data)}


@router.websocket("/api/ws")
async def live_status(websocket: WebSocket) -> None:
    """The live status of the caller's sandbox jobs (module docstring)."""
    state: State = websocket.app.state.fragments
    await websocket.accept()
    live = LiveSocket(websocket, state)
    try:
        if await live.authenticate():
            await live.serve()
    except WebSocketDisconnect:
        pass
    finally:
        await live.aclose()
