"""The shipped monitoring files: Prometheus config, alert rules and the Grafana dashboard.

Every PromQL expression is parsed, and every metric it names must be one the service
exports (ours, BentoML's, or Prometheus's own `up`), so a renamed metric breaks a test
instead of silently blanking a panel or an alert. docs/operations.md documents every metric.
"""

from __future__ import annotations

import json
import re

import promql_parser
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from benchmarks.harness.server import ROOT
from service import metrics, store_metrics

DEPLOY = ROOT / "deploy"
# BentoML's own request metrics, as scraped from a running server.
BENTOML_SAMPLES = {
    "bentoml_service_request_total",
    "bentoml_service_request_in_progress",
    *(f"bentoml_service_request_duration_seconds_{s}" for s in ("bucket", "sum", "count")),
}
METRIC_NAME = re.compile(r"\b((?:livetune|bentoml)_[a-z0-9_]+|up)\b(?!\s*\()")


def our_metrics() -> list:
    kinds = (Counter, Gauge, Histogram)
    values = [*vars(metrics).values(), *vars(store_metrics).values()]
    return [value for value in values if isinstance(value, kinds)]


def sample_names(metric) -> set[str]:
    name = metric._name
    if isinstance(metric, Counter):
        return {f"{name}_total"}
    if isinstance(metric, Histogram):
        return {f"{name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return {name}


EXPORTED = {"up", *BENTOML_SAMPLES, *(n for m in our_metrics() for n in sample_names(m))}


def check_expression(expr: str) -> None:
    promql_parser.parse(expr)  # raises ValueError on a syntax error
    unknown = {name for name in METRIC_NAME.findall(expr) if name not in EXPORTED}
    assert not unknown, f"{expr!r} names metrics the service does not export: {unknown}"


def alert_rules() -> list[dict]:
    document = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "livetune.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    # Grafana's template variable is not PromQL: substitute a value as Grafana would.
    return [expr.replace("$instance", ".*") for expr in expressions]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_rules_parse_and_name_exported_metrics(rule):
    assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    if "for" in rule:
        assert re.fullmatch(r"\d+[smhd]", rule["for"])
    check_expression(rule["expr"])


def test_alert_rules_cover_what_operators_asked_for():
    expressions = " ".join(rule["expr"] for rule in alert_rules())
    for metric in (
        "livetune_training_last_promotion_timestamp_seconds",  # no promotion for a day
        "livetune_online_accuracy",  # online accuracy falls
        'livetune_training_runs_total{outcome="failed"}',  # training fails repeatedly
        "livetune_adapter_swap_failures_total",  # failed swaps
    ):
        assert metric in expressions


def test_a_bad_expression_is_caught():
    with pytest.raises(ValueError):
        check_expression("rate(livetune_predictions_total[5m]")
    with pytest.raises(AssertionError):
        check_expression("livetune_predictions_count")


def test_prometheus_config_scrapes_metrics_and_loads_the_rules():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (DEPLOY / rule_file).is_file()
    [job] = config["scrape_configs"]
    assert (job["job_name"], job["metrics_path"]) == ("livetune", "/metrics")


def test_dashboard_queries_parse_and_name_exported_metrics():
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    for expr in expressions:
        check_expression(expr)
    used = set().union(*(METRIC_NAME.findall(expr) for expr in expressions))
    for metric in our_metrics():  # every metric we export is on the dashboard
        assert sample_names(metric) & used, f"{metric._name} is on no dashboard panel"


def test_readme_documents_every_metric():
    """The metric list lives in docs/operations.md, which the README links to."""
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "docs/operations.md#metrics" in (ROOT / "README.md").read_text()
    for metric in our_metrics():
        names = sample_names(metric) if isinstance(metric, Counter) else {metric._name}
        listed = any(f"| `{name}` |" in operations for name in names)
        assert listed, f"{metric._name} not in docs/operations.md"
