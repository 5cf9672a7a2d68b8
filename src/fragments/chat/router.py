"""POST /api/chat: check the request, then stream the answer as server-sent events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse
from starlette.types import Message, Send

from fragments.auth.deps import CurrentUser
from fragments.chat.request import chat_limits
from fragments.chat.service import answer
from fragments.schemas import ChatRequest
from fragments.state import State, get_state

router = APIRouter()
# GET /api/usage rides on this router so the app's router list stays as it is.


# Async on purpose: FastAPI runs plain `def` dependencies in a worker thread, which costs more
# than everything else this request does before streaming.
async def chat_state(request: Request) -> State:
    return get_state(request)


ChatStateDep = Annotated[State, Depends(chat_state)]


class _EventStream(EventSourceResponse):
    """sse-starlette opens an anyio cancel scope around every send even without a send timeout;
    at ~55 events an answer that is a measurable share of the streaming budget."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


@router.post(
    "/api/chat",
    dependencies=[Depends(chat_limits)],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat(
    request: Request, body: ChatRequest, state: ChatStateDep, who: CurrentUser
) -> EventSourceResponse:
    """Stream a fragment: `provider`, `partial`*, `fragment`, `usage`, `done` (or `error`)."""
    reply = await answer(request, state, body, who)
    return _EventStream(
        reply.events,
        ping=15,
        headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store", **reply.headers},
    )
