"""The alert rules and dashboard queries, evaluated by Prometheus's own promtool.

promtool checks the scrape config and the rule files, runs the unit tests in
deploy/tests/alerts_test.yml (each alert fires when its description says, and not
otherwise) on deploy/alerts.yml and on the PrometheusRule's groups, and evaluates the
dashboard's per-worker and training queries on series shaped as the service exports them.
Without promtool (Debian: apt-get install prometheus) these skip locally and fail in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmarks.harness.server import ROOT

DEPLOY = ROOT / "deploy"
ALERT_TESTS = DEPLOY / "tests" / "alerts_test.yml"
SELECTOR = '{job="livetune", instance="api:3000"'  # a series' labels, before its own
PIDS = [("10", 0), ("11", 2), ("12", 3)]  # (pid, value): the Trainer first, it has no adapter
BUCKET = "livetune_training_duration_seconds_bucket"


def unavailable(reason: str) -> None:
    """Skip locally, but fail in CI: CI installs promtool and must run these tests."""
    if os.environ.get("CI"):
        pytest.fail(f"promtool tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"promtool tests skipped: {reason}")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("no promtool on PATH (apt-get install prometheus)")
    return path


def run(promtool: str, *args: str | Path) -> None:
    command = [promtool, *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"


def prometheus_rule_file(folder: Path) -> Path:
    """The PrometheusRule's groups as a plain rule file, `folder`/alerts.yml."""
    rule = yaml.safe_load((DEPLOY / "k8s" / "prometheusrule.yaml").read_text())
    path = folder / "alerts.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_the_shipped_config_and_rules_pass_promtool_check(promtool, tmp_path):
    run(promtool, "check", "config", DEPLOY / "prometheus.yml")  # its rule_files too
    run(promtool, "check", "rules", DEPLOY / "alerts.yml", prometheus_rule_file(tmp_path))


def test_the_alert_unit_tests_pass_on_alerts_yml(promtool):
    run(promtool, "test", "rules", ALERT_TESTS)


def test_the_alert_unit_tests_pass_on_the_prometheus_rule(promtool, tmp_path):
    prometheus_rule_file(tmp_path)
    (tmp_path / "tests").mkdir()
    tests = shutil.copy(ALERT_TESTS, tmp_path / "tests")  # its ../alerts.yml is the extract
    run(promtool, "test", "rules", tests)


def test_every_alert_is_tested_firing_and_silent():
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    silent = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fires == silent == alerts


def panel_query(title: str) -> str:
    """The dashboard's query of the one-target panel `title`, for instance api:3000."""
    dashboard = json.loads((DEPLOY / "grafana" / "livetune.json").read_text())
    [panel] = [panel for panel in dashboard["panels"] if panel["title"] == title]
    return panel["targets"][0]["expr"].replace("$instance", "api:3000")


def series(name: str, labels: str, values: str) -> dict:
    return {"series": f"{name}{SELECTOR}{labels}}}", "values": values}


def test_dashboard_queries_on_the_series_the_service_exports(promtool, tmp_path):
    """Per-worker panels leave the Trainer (pid 10) out; one run of an outcome reads 1 run
    that day and gives a duration, because its series existed at 0 before the run."""
    per_worker = [
        series("livetune_adapter_info", ', pid="11", version="base"', "1x20"),
        series("livetune_adapter_info", ', pid="12", version="base"', "1 1 0x18"),
        series("livetune_adapter_info", ', pid="12", version="v1"', "_ _ 1x18"),
        *(series("livetune_requests_in_flight", f', pid="{p}"', f"{n}x20") for p, n in PIDS),
        *(series("livetune_label_set_version", f', pid="{p}"', f"{n}x20") for p, n in PIDS),
    ]
    runs = [  # one promoted run of 100 s at 5m; none of the other outcomes
        series("livetune_training_runs_total", ', outcome="promoted"', "0x4 1x15"),
        series("livetune_training_runs_total", ', outcome="failed"', "0x20"),
        *(series(BUCKET, f', outcome="promoted", le="{le}"', "0x4 1x15") for le in ("120", "+Inf")),
        series(BUCKET, ', outcome="promoted", le="60"', "0x20"),
    ]

    def workers(name: str) -> list[dict]:
        return [
            {"labels": f'{name}{SELECTOR}, pid="{pid}"}}', "value": value}
            for pid, value in PIDS[1:]
        ]

    cases = [
        ("Requests in flight by worker", workers("livetune_requests_in_flight")),
        ("Label-set version served by each worker", workers("livetune_label_set_version")),
        (
            "Training runs by outcome (per day)",
            [
                {"labels": '{outcome="failed"}', "value": 0},
                {"labels": '{outcome="promoted"}', "value": 1},
            ],
        ),
        ("Training duration p50 / p95", [{"labels": "{}", "value": 90}]),
    ]
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": per_worker + runs,
                "promql_expr_test": [
                    {"expr": panel_query(title), "eval_time": "10m", "exp_samples": expected}
                    for title, expected in cases
                ],
            }
        ],
    }
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    run(promtool, "test", "rules", path)
