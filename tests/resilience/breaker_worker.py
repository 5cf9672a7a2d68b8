"""A process that calls a service through a circuit breaker, for the multi-process tests.

`python -m tests.resilience.breaker_worker --redis URL --service URL ...` reads one JSON
command a line on stdin and answers on stdout, one JSON object a line:
- `{"fire": n, "concurrent": bool}`: n calls (all at once, or one after another); one
  `{"outcome": ok|failed|open|error, ...}` line per call as it ends, then `{"done": n}`;
- `{"state": true}`: `{"state": ...}`;
- `{"quit": true}`.
`error` is anything but the service's answer or `BreakerOpen`: the tests expect none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httpx
import structlog

from fragments.redis_client import SharedRedis
from fragments.resilience import BreakerConfig, BreakerOpen, CircuitBreaker


class ServiceFailed(Exception):
    pass


def emit(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def call(breaker: CircuitBreaker, client: httpx.AsyncClient, url: str) -> None:
    try:
        async with breaker.guard():
            response = await client.get(url)
            if response.status_code >= 500:
                raise ServiceFailed(response.status_code)
        emit({"outcome": "ok"})
    except BreakerOpen as exc:
        emit({"outcome": "open", "retry_after": exc.retry_after})
    except ServiceFailed:
        emit({"outcome": "failed"})
    except Exception as exc:  # reported, so a test can see it
        emit({"outcome": "error", "error": repr(exc)})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--failures", type=int, default=5)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--open", type=float, default=30.0)
    parser.add_argument("--probe-timeout", type=float, default=None)
    parser.add_argument("--redis-retry", type=float, default=5.0)
    args = parser.parse_args()
    # stdout carries the protocol; the breaker's warnings (Redis down) go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    config = BreakerConfig(
        failures=args.failures,
        window_seconds=args.window,
        open_seconds=args.open,
        probe_timeout_seconds=args.probe_timeout,
    )
    shared = SharedRedis.connect(args.redis, retry_seconds=args.redis_retry)
    breaker = CircuitBreaker("service", config, shared, prefix=args.prefix)
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        emit({"ready": True})
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            if "quit" in command:
                break
            if "state" in command:
                emit({"state": await breaker.state()})
                continue
            n = int(command["fire"])
            if command.get("concurrent"):
                await asyncio.gather(*(call(breaker, client, args.service) for _ in range(n)))
            else:
                for _ in range(n):
                    await call(breaker, client, args.service)
            emit({"done": n})
    await shared.aclose()


if __name__ == "__main__":
    asyncio.run(main())
