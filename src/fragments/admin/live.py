"""The service's figures since its processes started, read from the Prometheus metrics in this
process (`fragments.observability.metrics`; with PROMETHEUS_MULTIPROC_DIR, every worker's).
Absent metrics give None: the operator view then shows the stored figures only."""

from __future__ import annotations

import importlib
import math
import os
from collections import defaultdict
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from fragments.admin.public import LivePublic, SloPublic

HTTP_SECONDS = "fragments_http_request_duration_seconds"
# name -> [(labels, value)] for every sample of the app's metrics.
Samples = dict[str, list[tuple[dict[str, str], float]]]


def app_registry() -> CollectorRegistry:
    """What a scrape of the app reads: the metrics module's `registry()` when it has one (every
    worker's figures in multi-process mode), else every worker's files when
    PROMETHEUS_MULTIPROC_DIR is set, else prometheus-client's default registry."""
    try:
        module = importlib.import_module("fragments.observability.metrics")
    except ImportError:
        module = None
    make = getattr(module, "registry", None)
    if callable(make):
        made = make()
        if isinstance(made, CollectorRegistry):
            return made
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder and os.path.isdir(folder):
        registry = CollectorRegistry()
        # prometheus-client leaves this constructor unannotated.
        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def _samples(registry: CollectorRegistry) -> Samples:
    found: Samples = defaultdict(list)
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith("fragments_"):
                found[sample.name].append((dict(sample.labels), float(sample.value)))
    return found


def _total(samples: Samples, name: str, *, where: dict[str, Iterable[str]] | None = None,
           unless: dict[str, Iterable[str]] | None = None) -> float:  # fmt: skip
    total = 0.0
    for labels, value in samples.get(name, []):
        if where and any(labels.get(k) not in set(v) for k, v in where.items()):
            continue
        if unless and any(labels.get(k) in set(v) for k, v in unless.items()):
            continue
        total += value
    return total


def _buckets(samples: Samples, histogram: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) summed over every label set, by bound."""
    by_bound: dict[float, float] = defaultdict(float)
    for labels, value in samples.get(f"{histogram}_bucket", []):
        by_bound[float(labels.get("le", "+Inf"))] += value
    return sorted(by_bound.items())


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets (linear within a bucket; the
    highest finite bound when the rank falls in +Inf); None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _share_within(buckets: list[tuple[float, float]], bound: float) -> float | None:
    """The share of observations at or under `bound` (a bucket's upper bound)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    within = next((count for upper, count in buckets if upper == bound), None)
    return None if within is None else within / buckets[-1][1]


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def live_figures(registry: CollectorRegistry | None = None) -> LivePublic | None:
    """The figures of the app's metrics, or None when this process has none of them."""
    samples = _samples(registry if registry is not None else app_registry())
    if not samples:
        return None
    http = _total(samples, "fragments_http_requests_total")
    http_5xx = sum(
        value
        for labels, value in samples.get("fragments_http_requests_total", [])
        if labels.get("status", "").startswith("5")
    )
    llm = _total(samples, "fragments_llm_requests_total")
    llm_errors = _total(samples, "fragments_llm_requests_total", unless={"outcome": ["ok"]})
    runs = _total(samples, "fragments_sandbox_runs_total")
    run_errors = _total(samples, "fragments_sandbox_runs_total", where={"outcome": ["error"]})
    first_token = _buckets(samples, "fragments_llm_first_token_seconds")
    create = _buckets(samples, "fragments_sandbox_create_seconds")
    availability = _ratio(http - http_5xx, http)
    first_token_ok = _share_within(first_token, 15.0)
    create_ok = _share_within(create, 10.0)
    return LivePublic(
        http_requests=int(http),
        http_errors=int(http_5xx),
        http_error_ratio=_ratio(http_5xx, http),
        http_p95_seconds=quantile(0.95, _buckets(samples, HTTP_SECONDS)),
        llm_requests=int(llm),
        llm_errors=int(llm_errors),
        llm_error_ratio=_ratio(llm_errors, llm),
        answer_p95_seconds=quantile(0.95, _buckets(samples, "fragments_llm_answer_seconds")),
        first_token_p95_seconds=quantile(0.95, first_token),
        sandbox_runs=int(runs),
        sandbox_errors=int(run_errors),
        sandbox_error_ratio=_ratio(run_errors, runs),
        sandbox_create_p95_seconds=quantile(0.95, create),
        sandbox_run_p95_seconds=quantile(0.95, _buckets(samples, "fragments_sandbox_run_seconds")),
        cost_usd=round(_total(samples, "fragments_llm_cost_usd_total"), 6),
        slos=[
            SloPublic(
                name="availability",
                objective="99.5 % of HTTP answers are not 5xx",
                target=0.995,
                value=availability,
                met=None if availability is None else availability >= 0.995,
            ),
            SloPublic(
                name="first_token",
                objective="chat first token p95 < 15 s",
                target=0.95,
                value=first_token_ok,
                met=None if first_token_ok is None else first_token_ok >= 0.95,
            ),
            SloPublic(
                name="sandbox_create",
                objective="sandbox creation p95 < 10 s",
                target=0.95,
                value=create_ok,
                met=None if create_ok is None else create_ok >= 0.95,
            ),
        ],
    )
