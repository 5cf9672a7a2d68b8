"""Run a fake provider as its own process, answering every request with the sample fragment.

    python -m tests.fakes --port 8011 --chunk-size 24 --delay 0.02
    python -m tests.fakes.openai --port 8011          # same; every protocol is served anyway
    python -m tests.fakes --fail-status 503            # a provider that is down
    python -m tests.fakes --stall-after 0              # one that never starts answering

Prints `READY <base url>` once listening (port 0 picks a free one) and serves until killed.
"""

from __future__ import annotations

import argparse
import socket

import uvicorn

from tests.fakes.base import ErrorReply, FakeProvider, FragmentReply, Reply

_BASE_PATHS = {"openai": "/v1", "anthropic": "", "gemini": ""}


def main(default_protocol: str = "openai", argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__)
    parser.add_argument(
        "--protocol",
        choices=sorted(_BASE_PATHS),
        default=default_protocol,
        help="only decides which base URL is printed",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=24)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between chunks")
    parser.add_argument("--first-delay", type=float, default=0.0)
    parser.add_argument("--mode", choices=["auto", "tool", "text"], default="auto")
    parser.add_argument(
        "--fail-status", type=int, default=None, help="answer every request with this status"
    )
    parser.add_argument(
        "--stall-after",
        type=int,
        default=None,
        help="go silent after this many content events (0: before the first token)",
    )
    args = parser.parse_args(argv)

    reply: Reply = FragmentReply(
        chunk_size=args.chunk_size,
        delay=args.delay,
        first_delay=args.first_delay,
        mode=args.mode,
        stall_after=args.stall_after,
    )
    if args.fail_status is not None:
        reply = ErrorReply(args.fail_status, "fake provider failing on purpose")
    # Forever mode must not grow: keep no request records.
    fake = FakeProvider(default=reply, record=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake._app,
        interface="asgi3",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
    ready = f"READY http://{args.host}:{port}{_BASE_PATHS[args.protocol]}"
    _Server(config, ready).run(sockets=[sock])  # handles SIGINT / SIGTERM itself


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: str) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        print(self._ready, flush=True)


if __name__ == "__main__":
    main()
