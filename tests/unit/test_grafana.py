"""monitoring/grafana: provisioning files and our dashboard. Every PromQL expression of the
dashboard names only metrics that are exported: ours (monitoring.metrics) or Ray Serve's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.metrics import SPECS, exported_name

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "monitoring" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "raymlops.json"

# Ray Serve's own metrics the dashboard uses (exported as ray_<name>); each name is checked
# against the installed Ray's source below.
SERVE_METRICS = {
    "ray_serve_deployment_replica_healthy": "serve_deployment_replica_healthy",
    "ray_serve_autoscaling_target_replicas": "serve_autoscaling_target_replicas",
}


def _exported(name: str) -> set[str]:
    base = exported_name(name)
    if SPECS[name][0] == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return {base}


ALLOWED_METRICS = set().union(*(_exported(n) for n in SPECS)) | set(SERVE_METRICS)

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (also a Grafana `label_values(metric, label)`)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,[^)]*\)", r" \1 ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue  # a function, or an operator keyword
        names.add(word)
    return names


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.extend(p.get("panels", []) if p["type"] == "row" else [p])
    return out


def dashboard_exprs(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in panels(dash) for t in p["targets"]]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def dashboard_metrics() -> set[str]:
    """Every metric the dashboard's queries name (the integration test scrapes for them)."""
    return set().union(*(metric_names(e) for e in dashboard_exprs(dashboard())))


def test_metric_name_parser():
    assert metric_names(
        "histogram_quantile(0.99, sum by (model_version, le) (rate(ray_mlops_request_latency_ms_"
        'bucket{application=~"$application", kind!="up"}[$__rate_interval])))'
    ) == {"ray_mlops_request_latency_ms_bucket"}
    assert metric_names(
        "sum by (v) (rate(a_total[5m])) / ignoring (v) group_left sum(b) "
        "unless c offset 15m and on (instance) (up offset 1h) > 0.5e3"
    ) == {"a_total", "b", "c", "up"}
    assert metric_names("label_values(ray_serve_deployment_replica_healthy, application)") == {
        "ray_serve_deployment_replica_healthy"
    }


def test_dashboard_loads_and_every_panel_queries_prometheus():
    dash = dashboard()
    assert dash["uid"] == "raymlops" and dash["title"]
    names = [v["name"] for v in dash["templating"]["list"]]
    assert "datasource" in names and "application" in names
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = panels(dash)
    assert len(graphs) >= 10
    for p in graphs:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        assert p.get("description"), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            # Several Serve applications can share a cluster: every query filters on one.
            assert 'application=~"$application"' in t["expr"], (p["title"], t["expr"])


def test_dashboard_names_only_exported_metrics():
    for expr in dashboard_exprs(dashboard()):
        names = metric_names(expr)
        assert names, expr
        assert names <= ALLOWED_METRICS, f"unknown metrics {names - ALLOWED_METRICS} in {expr}"


def test_dashboard_covers_the_operations_view():
    used = dashboard_metrics()
    for name in (
        "mlops_requests",
        "mlops_canary_weight",
        "mlops_accuracy",
        "mlops_drift_score",
        "mlops_errors",
        "mlops_rollout_step",
        "mlops_retraining_runs",
        "mlops_records_dropped",
    ):
        assert exported_name(name) in used, name
    assert "ray_mlops_request_latency_ms_bucket" in used
    assert "ray_serve_deployment_replica_healthy" in used
    quantiles = {
        m.group(1)
        for e in dashboard_exprs(dashboard())
        for m in re.finditer(r"histogram_quantile\((0\.\d+)", e)
    }
    assert quantiles == {"0.5", "0.95", "0.99"}


def test_serve_metric_names_exist_in_installed_ray():
    import ray.serve

    source = "\n".join(
        p.read_text(errors="ignore") for p in Path(ray.serve.__file__).parent.rglob("*.py")
    )
    for exported, name in SERVE_METRICS.items():
        assert exported == f"ray_{name}"
        assert f'"{name}"' in source, f"Ray Serve no longer defines {name}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every query (as a recording rule, Grafana variables substituted)."""
    rules = [
        {
            "record": f"dashboard:q{i}",
            "expr": e.replace("$__rate_interval", "1m").replace("$application", ".*"),
        }
        for i, e in enumerate(dashboard_exprs(dashboard()))
        if not e.startswith("label_values(")
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_provisioning_points_at_prometheus_and_both_dashboard_folders():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://localhost:9090"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "raymlops.yml").read_text())
    paths = {p["name"]: p["options"]["path"] for p in prov["providers"]}
    assert paths == {"raymlops": "${RAYMLOPS_DASHBOARDS}", "ray": "${RAY_GRAFANA_DASHBOARDS}"}
    assert list((GRAFANA / "dashboards").glob("*.json")) == [DASHBOARD]
