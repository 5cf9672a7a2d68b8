"""The operator view's live figures, read from Prometheus metrics named as the app names them
(on a private registry here): totals, error ratios, p95s as Prometheus computes them from the
buckets, and the three SLOs met or missed."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from fragments.admin.live import live_figures, quantile

BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 60)


def _registry(slow_first_tokens: int, slow_creations: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    http = Counter("fragments_http_requests", "", ["method", "route", "status"], registry=registry)
    http.labels("POST", "/api/chat", "200").inc(990)
    http.labels("GET", "/api/models", "404").inc(5)
    http.labels("POST", "/api/chat", "503").inc(5)
    duration = Histogram(
        "fragments_http_request_duration_seconds", "", ["method", "route"],
        buckets=BUCKETS, registry=registry,
    )  # fmt: skip
    for _ in range(100):
        duration.labels("GET", "/api/models").observe(0.05)
    llm = Counter("fragments_llm_requests", "", ["provider", "model", "outcome"], registry=registry)
    llm.labels("openai", "gpt-4o", "ok").inc(90)
    llm.labels("openai", "gpt-4o", "provider_timeout").inc(10)
    first = Histogram(
        "fragments_llm_first_token_seconds", "", ["provider", "model"],
        buckets=BUCKETS, registry=registry,
    )  # fmt: skip
    answer = Histogram(
        "fragments_llm_answer_seconds", "", ["provider", "model"],
        buckets=BUCKETS, registry=registry,
    )  # fmt: skip
    for index in range(100):
        first.labels("openai", "gpt-4o").observe(18 if index < slow_first_tokens else 1.2)
        answer.labels("openai", "gpt-4o").observe(8)
    runs = Counter(
        "fragments_sandbox_runs", "", ["template", "backend", "outcome"], registry=registry
    )
    runs.labels("code-interpreter-v1", "local", "ok").inc(45)
    runs.labels("code-interpreter-v1", "local", "no_preview").inc(3)
    runs.labels("code-interpreter-v1", "local", "error").inc(2)
    create = Histogram(
        "fragments_sandbox_create_seconds", "", ["template", "backend"],
        buckets=BUCKETS, registry=registry,
    )  # fmt: skip
    for index in range(50):
        create.labels("code-interpreter-v1", "local").observe(12 if index < slow_creations else 0.3)
    cost = Counter("fragments_llm_cost_usd", "", ["provider", "model", "tier"], registry=registry)
    cost.labels("openai", "gpt-4o", "free").inc(1.25)
    cost.labels("openai", "gpt-4o", "pro").inc(0.5)
    return registry


def test_the_live_figures_add_up() -> None:
    live = live_figures(_registry(slow_first_tokens=2, slow_creations=1))
    assert live is not None
    assert (live.http_requests, live.http_errors) == (1000, 5)
    assert live.http_error_ratio == pytest.approx(0.005)
    assert (live.llm_requests, live.llm_errors) == (100, 10)
    assert live.llm_error_ratio == pytest.approx(0.1)
    assert (live.sandbox_runs, live.sandbox_errors) == (50, 2)
    assert live.cost_usd == pytest.approx(1.75)
    # All 100 in the (0, 0.1] bucket: p95 interpolates to 0.095.
    assert live.http_p95_seconds == pytest.approx(0.095)
    # All answers in (5, 10]: 5 + 5 × 95/100.
    assert live.answer_p95_seconds == pytest.approx(9.75)
    # 98 first tokens in (1, 2.5], 2 in (15, 20]: rank 95 falls in (1, 2.5].
    assert live.first_token_p95_seconds == pytest.approx(1 + 1.5 * 95 / 98)
    slos = {slo.name: slo for slo in live.slos}
    assert slos["availability"].value == pytest.approx(0.995)
    assert slos["availability"].met is True
    assert slos["first_token"].value == pytest.approx(0.98)
    assert slos["first_token"].met is True
    assert slos["sandbox_create"].value == pytest.approx(49 / 50)
    assert slos["sandbox_create"].met is True


def test_slow_first_tokens_and_creations_miss_their_objectives() -> None:
    live = live_figures(_registry(slow_first_tokens=10, slow_creations=5))
    assert live is not None
    slos = {slo.name: slo for slo in live.slos}
    assert slos["first_token"].value == pytest.approx(0.9)
    assert slos["first_token"].met is False
    assert slos["sandbox_create"].value == pytest.approx(0.9)
    assert slos["sandbox_create"].met is False
    assert live.first_token_p95_seconds == pytest.approx(15 + 5 * 0.5)


def test_no_metrics_is_none() -> None:
    assert live_figures(CollectorRegistry()) is None


def test_quantile_matches_prometheus() -> None:
    # histogram_quantile(0.95, ...) over these cumulative buckets.
    buckets = [(10.0, 0.0), (30.0, 2.0), (60.0, 10.0), (float("inf"), 10.0)]
    assert quantile(0.95, buckets) == pytest.approx(58.125)
    # The rank in +Inf: the highest finite bound.
    assert quantile(0.99, [(1.0, 1.0), (float("inf"), 10.0)]) == 1.0
    assert quantile(0.95, [(1.0, 0.0), (float("inf"), 0.0)]) is None
