"""The app's Prometheus metrics (the names `fragments.observability.metrics` exports) and a small
PromQL reader that finds the metric names an expression reads, so the rules and the dashboard
can be checked against them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

COUNTERS = {
    "fragments_http_requests_total",
    "fragments_llm_requests_total",
    "fragments_llm_tokens_total",
    "fragments_llm_cost_usd_total",
    "fragments_llm_fallbacks_total",
    "fragments_sandbox_runs_total",
    "fragments_limit_refusals_total",
}
HISTOGRAMS = {
    "fragments_http_request_duration_seconds",
    "fragments_llm_first_token_seconds",
    "fragments_llm_answer_seconds",
    "fragments_sandbox_create_seconds",
    "fragments_sandbox_run_seconds",
}
GAUGES = {
    "fragments_llm_monthly_budget_usd",
    "fragments_pool_slots",
    "fragments_queue_depth",
    "fragments_queue_oldest_job_seconds",
    "fragments_queue_dead_letters",
    "fragments_breaker_state",
    "fragments_active_users",
}
# Every series name a scrape can show: histograms as their _bucket, _sum and _count series.
SERIES = (
    COUNTERS
    | GAUGES
    | {f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression reads."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _GROUPING.sub("", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables ($__rate_interval, ${model})
    names = set()
    for found in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = found.group(1), found.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def unknown_metrics(expr: str, recorded: set[str]) -> set[str]:
    """Names in `expr` that are neither the app's series nor a recording rule of ours."""
    return metric_names(expr) - SERIES - recorded


def recorded_names(rules_file: Path) -> set[str]:
    """The recording rules' names in a Prometheus rules file."""
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
