"""The Grafana dashboard (deploy/grafana/fragments.json) loads, has a panel for each figure the
operators asked for, reads only the app's metrics and our recording rules, and every expression
parses as PromQL (promtool checks them as recording rules)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.contract import SERIES, metric_names, recorded_names, unknown_metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "fragments.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"

# A word of a panel's title for each figure the dashboard must show.
REQUIRED_TITLES = (
    "HTTP requests",
    "HTTP errors",
    "HTTP p95",
    "First token p95",
    "Chat answer p95",
    "Sandbox creation p95",
    "Sandbox run p95",
    "Sandbox runs by outcome",
    "LLM cost per day",
    "LLM cost per day and model",
    "Warm pool slots",
    "Queue depth",
    "Circuit breakers",
    "Limit refusals",
    "Availability",
    "Chat first token within 15 s",
    "Sandbox creation within 10 s",
    "burn rate",
)


def _dashboard() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return body


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def _expressions() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_has_every_figure() -> None:
    body = _dashboard()
    assert body["title"] == "Fragments"
    titles = [panel["title"] for panel in _panels(body["panels"])]
    for wanted in REQUIRED_TITLES:
        assert any(wanted in title for title in titles), f"no panel for {wanted!r}"
    ids = [panel["id"] for panel in _panels(body["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in _panels(body["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_expression_reads_only_the_apps_metrics() -> None:
    recorded = recorded_names(RULES)
    expressions = _expressions()
    assert len(expressions) >= 25
    seen: set[str] = set()
    for title, expr in expressions:
        assert unknown_metrics(expr, recorded) == set(), title
        seen |= metric_names(expr)
    # Every metric of the contract is on the dashboard, directly or through a recording rule.
    rules = yaml.safe_load(RULES.read_text())["groups"]
    for group in rules:
        for rule in group["rules"]:
            if rule.get("record") in seen:
                seen |= metric_names(rule["expr"])
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in SERIES}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in seen}
    assert families - shown == set(), "metrics the dashboard never shows"


def test_every_expression_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (Debian's prometheus package; `make install` installs it)")
    rules = [
        {"record": f"dashboard:panel_{index}", "expr": expr.replace("$__rate_interval", "5m")}
        for index, (_, expr) in enumerate(_expressions())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_panel_reading_a_stranger_is_caught() -> None:
    recorded = recorded_names(RULES)
    assert unknown_metrics("sum(rate(fragments_sandbox_runs[5m]))", recorded) == {
        "fragments_sandbox_runs"
    }
