"""The Prometheus rules (deploy/prometheus/rules.yml) pass `promtool check rules`, their unit
tests (deploy/prometheus/tests.yml) pass `promtool test rules`, every alert carries a summary, a
description and a runbook link whose anchor is a heading of docs/runbook.md, and every metric
the rules read is one of the app's (tests/deploy/contract.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.contract import recorded_names, unknown_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
TESTS = ROOT / "deploy" / "prometheus" / "tests.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is missing (Debian's prometheus package; `make install` installs it)")
    return found


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", str(TESTS)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    fired: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts - fired == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown silent below their threshold"


def test_every_alert_has_a_summary_description_and_runbook() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert len(alerts) >= 8
    for rule in alerts:
        notes = rule["annotations"]
        assert notes["summary"].strip(), rule["alert"]
        assert notes["description"].strip(), rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/runbook.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no heading #{anchor} in docs/runbook.md"
        assert rule["labels"]["severity"] in {"page", "warning", "info"}


def test_the_rules_read_only_the_apps_metrics() -> None:
    recorded = recorded_names(RULES)
    for rule in _rules():
        name = rule.get("alert", rule.get("record"))
        assert unknown_metrics(rule["expr"], recorded) == set(), name


def test_the_metric_check_catches_a_stranger() -> None:
    # The check used above must be able to fail.
    expr = 'sum(rate(fragments_http_requests_totl{status=~"5.."}[5m])) / sum(up)'
    assert unknown_metrics(expr, set()) == {"fragments_http_requests_totl", "up"}
    assert unknown_metrics("fragments_llm_answer_seconds_bucket offset 5m", set()) == set()
