"""monitoring/prometheus: promtool accepts the config and the rules, the rules' own unit tests
(alerts_test.yml) pass, and the alerts only name metrics that exist."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_grafana import ALLOWED_METRICS, metric_names

PROM_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)",
)

ALERTS = {
    "MlopsHighErrorRate",
    "MlopsHighLatencyP99",
    "MlopsDriftDetected",
    "MlopsAccuracyLow",
    "MlopsRolloutRolledBack",
    "MlopsNoHealthyReplica",
    "MlopsRetrainingFailing",
    "MlopsRecordsDropped",
    "MlopsRegistryUnreachable",
    "RayMetricsTargetDown",
}


def promtool(*args: str) -> str:
    # cwd: the config and the tests name alerts.yml relative to their own directory.
    proc = subprocess.run(
        [PROMTOOL, *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=60
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def load_rules() -> list[dict]:
    groups = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@needs_promtool
def test_promtool_check_config():
    out = promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in out


@needs_promtool
def test_promtool_check_rules():
    out = promtool("check", "rules", "alerts.yml")
    assert f"{len(ALERTS)} rules found" in out


@needs_promtool
def test_promtool_unit_tests_of_every_alert_pass():
    promtool("test", "rules", "alerts_test.yml")
    tested = {
        case["alertname"]
        for test in yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert tested == ALERTS, "every alert needs a test case where it fires"


def test_every_alert_has_for_severity_and_instructions():
    rules = load_rules()
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert len(rule["annotations"]["description"]) > 100, rule["alert"]


def test_alerts_name_only_exported_metrics():
    for rule in load_rules():
        unknown = metric_names(rule["expr"]) - ALLOWED_METRICS - {"up"}
        assert not unknown, f"{rule['alert']} names metrics nobody exports: {unknown}"


def test_local_config_reads_rays_service_discovery_file():
    """The path Ray 2.60's dashboard writes (PrometheusServiceDiscoveryWriter: a symlink in
    the temp dir to <session dir>/prom_metrics_service_discovery.json)."""
    from ray._private import ray_constants

    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    files = job["file_sd_configs"][0]["files"]
    assert files == [f"/tmp/ray/{ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE}"]
    assert config["rule_files"] == ["alerts.yml"]
