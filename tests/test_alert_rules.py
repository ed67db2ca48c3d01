"""The shipped Prometheus alerts and Grafana dashboard: valid, unit-tested, and using only metrics we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from itertools import chain
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from rag import metrics as rag_metrics
from resilience import metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "ragsite.json"
ALERTS = {
    "CircuitBreakerOpen",
    "LowCacheHitRate",
    "CacheFull",
    "HighEvictionRate",
    "HighQueryLatency",
    "OllamaErrors",
    "JobQueueGrowing",
    "JobsFailing",
}


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    executable = shutil.which("promtool")
    if executable is None:
        pytest.fail("promtool is missing: run scripts/system-deps.sh (make test does)")
    return subprocess.run([executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_are_valid():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_holds_back_as_its_unit_tests_say():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_shipped_and_unit_tested():
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {rule["alert"] for rule in rules} == ALERTS
    tests = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for alert in ALERTS:
        assert any(c["alertname"] == alert and c["exp_alerts"] for c in cases), f"{alert} never fires"
        assert any(c["alertname"] == alert and not c["exp_alerts"] for c in cases), f"{alert} never holds back"


def test_the_rules_use_only_metrics_we_export():
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    used = set(re.findall(r"\bragsite_[a-z_]+", " ".join(rule["expr"] for rule in rules)))
    assert used <= exported_names(), used - exported_names()


def test_the_example_scrape_config_is_valid(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-metrics-token-for-tests\n")
    config = (RULES_DIR / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/ragsite-metrics-token", str(token)))
    shutil.copy(RULES_DIR / "alerts.yml", tmp_path)
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_the_dashboard_shows_breakers_hit_rate_latency_and_the_pool():
    panels = {panel["title"]: panel for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert panels["Breaker state"]["type"] == "state-timeline"
    assert {"Cache hit rate", "Query latency percentiles", "Pool requests and retries", "Job queue"} <= set(panels)


def test_the_dashboard_queries_parse_and_use_only_metrics_we_export(tmp_path):
    queries = [expr.replace("$__rate_interval", "5m") for expr in dashboard_queries()]
    used = set(re.findall(r"\bragsite_[a-z_]+", " ".join(queries)))
    assert used <= exported_names(), used - exported_names()
    # promtool parses PromQL only in rule files: wrap each query as a recording rule.
    rules = [{"record": f"dashboard:query{i}", "expr": expr} for i, expr in enumerate(queries)]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names() -> set[str]:
    """Every series name our metrics can produce (with _total, _bucket, ... suffixes)."""
    modules = (metrics, rag_metrics)
    wrappers = [v for module in modules for v in vars(module).values() if isinstance(v, MetricWrapperBase)]
    collectors = [
        *metrics.pool_size_collector.describe(),
        *rag_metrics.cache_collector.describe(),
        *rag_metrics.job_collector.describe(),
    ]
    families = [*chain.from_iterable(w.describe() for w in wrappers), *collectors]
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    return {family.name + suffix for family in families for suffix in suffixes.get(family.type, [""])}
