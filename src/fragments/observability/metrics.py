"""Prometheus metrics: the names operators' rules and dashboards read, and small functions to
record them.

The metrics live in prometheus-client's process-wide registry, made at import. With several
worker processes (`fragments serve --workers N`) the CLI sets `PROMETHEUS_MULTIPROC_DIR` to a
fresh folder before any worker starts, prometheus-client writes each process's values there,
and a scrape of any worker (or of the metrics port) adds them up (`registry()`).

Gauges that describe a process's state at a moment (warm pool slots, active users) are
refreshed from their sources when scraped (`refresh`) and, with several workers, every few
seconds by each worker (the scraping worker cannot see the others' pools).

Functions here are what the rest of the app calls; they never raise, and cost a dictionary
look-up and a lock each.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LLM_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 120)
_SANDBOX_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)

HTTP_REQUESTS = Counter(
    "fragments_http_requests_total",
    "HTTP requests served, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "fragments_http_request_duration_seconds",
    "Time from a request's arrival to its last response byte (a whole stream for SSE).",
    ["method", "route"],
    buckets=_HTTP_BUCKETS,
)
LLM_REQUESTS = Counter(
    "fragments_llm_requests_total",
    "Model answers by provider, model and outcome (ok, or the SSE error code).",
    ["provider", "model", "outcome"],
)
LLM_FIRST_TOKEN = Histogram(
    "fragments_llm_first_token_seconds",
    "Time from the chat request to the model's first answer text.",
    ["provider", "model"],
    buckets=_LLM_BUCKETS,
)
LLM_ANSWER = Histogram(
    "fragments_llm_answer_seconds",
    "Time from the chat request to the model's complete answer.",
    ["provider", "model"],
    buckets=_LLM_BUCKETS,
)
LLM_TOKENS = Counter(
    "fragments_llm_tokens_total",
    "Model tokens by provider, model, caller's tier and kind (input includes cache reads).",
    ["provider", "model", "tier", "kind"],
)
LLM_COST = Counter(
    "fragments_llm_cost_usd_total",
    "Model cost at list prices, in US dollars.",
    ["provider", "model", "tier"],
)
LLM_FALLBACKS = Counter(
    "fragments_llm_fallbacks_total",
    "Answers moved from one provider to another, and why.",
    ["from_provider", "to_provider", "reason"],
)
LLM_MONTHLY_BUDGET = Gauge(
    "fragments_llm_monthly_budget_usd",
    "The month's model spending budget (FRAGMENTS_MONTHLY_LLM_BUDGET_USD; 0 = none).",
    multiprocess_mode="max",
)
SANDBOX_CREATE = Histogram(
    "fragments_sandbox_create_seconds",
    "Time to get a run's sandbox ready (taken warm, or started).",
    ["template", "backend"],
    buckets=_SANDBOX_BUCKETS,
)
SANDBOX_RUN = Histogram(
    "fragments_sandbox_run_seconds",
    "Time a run took once its sandbox was ready (install, start, execute).",
    ["template", "backend"],
    buckets=_SANDBOX_BUCKETS,
)
SANDBOX_RUNS = Counter(
    "fragments_sandbox_runs_total",
    "Sandbox runs by template, backend and outcome (ok, error, no_preview).",
    ["template", "backend", "outcome"],
)
POOL_SLOTS = Gauge(
    "fragments_pool_slots",
    "Warm pool sandboxes by template and state (idle: ready to take; busy: serving a run).",
    ["template", "state"],
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "fragments_queue_depth",
    "Jobs waiting on a queue stream.",
    ["stream"],
    multiprocess_mode="mostrecent",
)
QUEUE_OLDEST = Gauge(
    "fragments_queue_oldest_job_seconds",
    "Age of the oldest job waiting on a queue stream.",
    ["stream"],
    multiprocess_mode="mostrecent",
)
QUEUE_DEAD_LETTERS = Gauge(
    "fragments_queue_dead_letters",
    "Jobs in the dead-letter stream (given up after FRAGMENTS_JOB_MAX_ATTEMPTS deliveries).",
    multiprocess_mode="mostrecent",
)
BREAKER_STATE = Gauge(
    "fragments_breaker_state",
    "Circuit breaker state: 0 closed, 1 half open, 2 open.",
    ["name"],
    multiprocess_mode="mostrecent",
)
LIMIT_REFUSALS = Counter(
    "fragments_limit_refusals_total",
    "Requests refused by a limit (rate_limit, budget, guest_tokens, sandbox_limit).",
    ["kind"],
)
ACTIVE_USERS = Gauge(
    "fragments_active_users",
    "Distinct users (guests by IP) seen in the last 5 minutes.",
    multiprocess_mode="max",
)

# False: every recording function below returns at once (FRAGMENTS_OBSERVABILITY=false).
enabled = True

BREAKER_STATES: Mapping[str, int] = {"closed": 0, "half_open": 1, "open": 2}
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


# ---- recording ---------------------------------------------------------------------------


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP request served."""
    if not enabled:
        return
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def llm_answer(
    provider: str,
    model: str,
    *,
    outcome: str | None,
    tier: str,
    first_token_seconds: float | None,
    answer_seconds: float | None,
    tokens: Mapping[str, int],
    cost_usd: float,
) -> None:
    """One model answer: its outcome (None: the client left, neither success nor failure),
    timings (None when it never got there), tokens by kind (input, output, cache_read,
    cache_write) and cost."""
    if not enabled:
        return
    if outcome is not None:
        LLM_REQUESTS.labels(provider, model, outcome).inc()
    if first_token_seconds is not None:
        LLM_FIRST_TOKEN.labels(provider, model).observe(first_token_seconds)
    if answer_seconds is not None:
        LLM_ANSWER.labels(provider, model).observe(answer_seconds)
    for kind, count in tokens.items():
        if count > 0:
            LLM_TOKENS.labels(provider, model, tier, kind).inc(count)
    if cost_usd > 0:
        LLM_COST.labels(provider, model, tier).inc(cost_usd)


def llm_fallback(from_provider: str, to_provider: str, reason: str) -> None:
    """An answer moved to another provider (failover), and why."""
    if not enabled:
        return
    LLM_FALLBACKS.labels(from_provider, to_provider, reason).inc()


def sandbox_run(
    template: str,
    backend: str,
    *,
    outcome: str,
    create_seconds: float | None,
    run_seconds: float | None,
) -> None:
    """One sandbox run: outcome ok, error or no_preview, and its phase times when known."""
    if not enabled:
        return
    SANDBOX_RUNS.labels(template, backend, outcome).inc()
    if create_seconds is not None:
        SANDBOX_CREATE.labels(template, backend).observe(create_seconds)
    if run_seconds is not None:
        SANDBOX_RUN.labels(template, backend).observe(run_seconds)


def limit_refused(kind: str) -> None:
    """A request refused by a limit: rate_limit, budget, guest_tokens or sandbox_limit."""
    if not enabled:
        return
    LIMIT_REFUSALS.labels(kind).inc()


def breaker_state(name: str, state: str) -> None:
    """A circuit breaker's state now: closed, half_open or open."""
    if not enabled:
        return
    BREAKER_STATE.labels(name).set(BREAKER_STATES.get(state, 2))


def queue_depth(stream: str, depth: int, oldest_seconds: float) -> None:
    """A job queue stream's waiting jobs and the age of its oldest."""
    if not enabled:
        return
    QUEUE_DEPTH.labels(stream).set(depth)
    QUEUE_OLDEST.labels(stream).set(oldest_seconds)


_queue_labels: set[str] = set()


def queue_streams(streams: Mapping[str, tuple[int, float]], dead_letters: int) -> None:
    """Every job stream's (waiting jobs, oldest job's age), and the dead letters; a stream
    seen before and gone now (a retired node's) reads 0 rather than its last value."""
    if not enabled:
        return
    for stream in _queue_labels - streams.keys():
        queue_depth(stream, 0, 0.0)
    for stream, (depth, oldest) in streams.items():
        queue_depth(stream, depth, oldest)
    _queue_labels.update(streams)
    QUEUE_DEAD_LETTERS.set(dead_letters)


def monthly_budget(usd: float) -> None:
    """The month's model budget in US dollars (0 = none)."""
    LLM_MONTHLY_BUDGET.set(usd)


# ---- gauges read from their sources -------------------------------------------------------


class ActiveUsers:
    """Who was seen lately: a user id, or a guest's IP. `seen` is a dict store per request;
    `count` prunes and counts at scrape time."""

    window_seconds = 300.0

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def seen(self, who: str) -> None:
        if not enabled:
            return
        self._last[who] = time.monotonic()

    def count(self) -> int:
        horizon = time.monotonic() - self.window_seconds
        stale = [who for who, at in self._last.items() if at < horizon]
        for who in stale:
            del self._last[who]
        return len(self._last)


ACTIVE = ActiveUsers()

# Pool slot counts: a function answering {(template, state): slots}, set by the app's lifespan.
PoolReader = Callable[[], Mapping[tuple[str, str], int]]
_pool_readers: list[PoolReader] = []
_pool_labels: set[tuple[str, str]] = set()


def watch_pool(reader: PoolReader) -> Callable[[], None]:
    """Read warm pool slots from `reader` at every refresh; returns the function to stop."""
    _pool_readers.append(reader)

    def stop() -> None:
        if reader in _pool_readers:
            _pool_readers.remove(reader)

    return stop


def refresh() -> None:
    """Bring the gauges read from their sources (pool slots, active users) up to date."""
    ACTIVE_USERS.set(ACTIVE.count())
    slots: dict[tuple[str, str], int] = {}
    for reader in list(_pool_readers):
        try:
            for key, value in reader().items():
                slots[key] = slots.get(key, 0) + value
        except Exception:  # a scrape must not fail because one source did
            continue
    for key in _pool_labels - slots.keys():
        POOL_SLOTS.labels(*key).set(0)
    for key, value in slots.items():
        POOL_SLOTS.labels(*key).set(value)
    _pool_labels.update(slots)


# Gauges whose sources answer over the network (Redis: the job queue, shared breakers): an
# async function that reads them and records them with the functions above, awaited at
# scrape time (and every few seconds by each worker; see exposition.gauges_kept_fresh).
AsyncReader = Callable[[], Awaitable[None]]
_async_readers: list[AsyncReader] = []
# A slow source must not hold the scrape: its gauges keep their last values instead.
ASYNC_READ_TIMEOUT_SECONDS = 2.0


def watch_async(reader: AsyncReader) -> Callable[[], None]:
    """Await `reader` at every async refresh; returns the function to stop."""
    _async_readers.append(reader)

    def stop() -> None:
        if reader in _async_readers:
            _async_readers.remove(reader)

    return stop


async def refresh_async() -> None:
    """Bring the gauges read from network sources up to date; never raises."""
    if not enabled:
        return
    for reader in list(_async_readers):
        try:
            async with asyncio.timeout(ASYNC_READ_TIMEOUT_SECONDS):
                await reader()
        except Exception:  # a scrape must not fail because one source did
            continue


# ---- exposition ---------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The folder shared by worker processes, when several serve (see the module)."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


class _Fresh(Collector):
    """This process's registry, its source-read gauges refreshed first."""

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        refresh()
        return REGISTRY.collect()


def registry() -> CollectorRegistry:
    """What a scrape reads: this process's metrics, or every worker's added up."""
    combined = CollectorRegistry(auto_describe=False)
    folder = multiprocess_dir()
    if folder is None:
        combined.register(_Fresh())
    else:
        # The workers refresh their own gauges (see the module); the files hold the rest.
        multiprocess.MultiProcessCollector(combined, path=folder)  # type: ignore[no-untyped-call]
    return combined
