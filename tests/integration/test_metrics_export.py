"""Our metrics reach Prometheus: every metric the raymlops dashboard queries is on a Ray node's
metrics export port, and a Prometheus using monitoring/prometheus/prometheus.yml (file-based
service discovery, as `make monitor`) returns per-version series of requests, latency and
canary weight."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import mlflow
import pytest
import ray
import yaml

from tests.conftest import ADMIN_TOKEN, FEEDBACK_TOKEN, reset_champion
from tests.helpers import free_port, wait_until
from tests.unit.test_grafana import dashboard_metrics
from training import registry

pytestmark = pytest.mark.ray
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
APP = "raymlops-metrics"
PROM_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(\{.*\})?\s")


def metrics_targets() -> list[str]:
    """host:port of every alive node's metrics export port (what Ray's SD file lists)."""
    return [
        f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}" for n in ray.nodes() if n["Alive"]
    ]


def exported_names(application: str) -> set[str]:
    """Metric names with at least one series of ``application`` on any node's export port."""
    names = set()
    for target in metrics_targets():
        text = httpx.get(f"http://{target}/metrics", timeout=10).text
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if m and f'application="{application}"' in (m.group(2) or ""):
                names.add(m.group(1))
    return names


@pytest.fixture(scope="module")
def url(module_app, trained, mlflow_uri, training_config):
    """One app for the module: the Prometheus test reads its series first, then the dashboard
    test rolls a copy of the champion out and back and fires the accuracy detector on it."""
    reset_champion(mlflow_uri, training_config.model_name, trained.version)
    return module_app(
        name=APP,
        # Two records fit in the router's buffer: a burst of requests drops some (counted).
        records={"buffer_capacity": 2, "flush_interval_s": 0.5},
        drift={
            "window_size": 500,
            "min_samples": 20,
            "min_labelled": 10,
            "min_new_samples": 1,
            "min_new_labels": 1,
            "hysteresis_count": 1,
            "cooldown_s": 0,
            "evaluate_interval_s": 0.5,
            "trigger_on": ["accuracy"],
        },
        # More CPUs than the cluster has: the retraining is started (and counted) but never
        # scheduled, so no test here runs Tune or registers a model. Serve deletes the
        # monitor, and with it the pending task, when the module ends.
        retraining={"min_labelled_rows": 10, "task_cpus": 64},
    )


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus not installed (Debian: apt-get install prometheus; .ci/run installs it)",
)
def test_local_prometheus_returns_per_version_series(url, trained, data, tmp_path):
    """The acceptance check of `make monitor`, on the test session's cluster.

    Ray's dashboard writes the service-discovery file; this session's cluster runs without a
    dashboard (tests/conftest.py), so the test writes the same content Ray's writer does
    (ray.nodes(): NodeManagerAddress:MetricsExportPort, job "ray") and points the repository's
    prometheus.yml at it."""
    app = APP
    sd_file = tmp_path / "prom_metrics_service_discovery.json"
    sd_file.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": metrics_targets()}]))

    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    # A scrape may not take longer than the scrape interval: with 1 s, a metrics port that
    # answers in 1.2 s late in a full suite run (a dozen apps' series) was "down" for good
    # (CI: "context deadline exceeded"). 5 s gives it room and still scrapes often.
    config["global"] = {
        "scrape_interval": "5s",
        "scrape_timeout": "5s",
        "evaluation_interval": "5s",
    }
    config["rule_files"] = [str(PROM_DIR / f) for f in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["file_sd_configs"][0]["files"] = [str(sd_file)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    port = free_port()
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),  # noqa: SIM115
    )
    prom = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=30) as c:
            X, _ = data
            for i in range(20):
                r = c.post(f"{url}/predict", json={"features": [X.iloc[i].tolist()]})
                assert r.status_code == 200, r.text

            def versions(query: str) -> set[str]:
                body = c.get(f"{prom}/api/v1/query", params={"query": query}).json()
                assert body["status"] == "success", body
                return {s["metric"].get("model_version") for s in body["data"]["result"]}

            def per_version_series():
                sel = f'{{application="{app}"}}'
                got = {
                    "requests": versions(f"ray_mlops_requests_total{sel}"),
                    "latency": versions(f"ray_mlops_request_latency_ms_bucket{sel}"),
                    "canary": versions(f"ray_mlops_canary_weight{sel}"),
                }
                if not all(trained.version in v for v in got.values()):
                    raise AssertionError(f"model_version labels so far: {got}")
                return got

            def targets():
                """Prometheus' view of its scrape targets: explains a timeout."""
                body = c.get(f"{prom}/api/v1/targets").json()
                return [
                    {k: t.get(k) for k in ("scrapeUrl", "health", "lastError", "lastScrape")}
                    for t in body.get("data", {}).get("activeTargets", [])
                ]

            # 180 s: late in a full suite run on 2 cores, after a dozen apps came and went,
            # the first scrape that holds this app's series took over 90 s once (CI).
            wait_until(
                per_version_series,
                timeout=180,
                interval=1.0,
                what="per-version series",
                context=targets,
            )
            # Ray's agent drops a gauge its worker stops setting after ~2 report intervals
            # (2 s in this session, tests/conftest.py), and Prometheus then marks the series
            # stale: the canary weight, which does not change without a rollout, must still be
            # there well after that (6 report intervals, 2 scrapes).
            time.sleep(12)
            assert per_version_series()["canary"] == {trained.version, "none"}
            up = c.get(f"{prom}/api/v1/query", params={"query": 'up{job="ray"}'}).json()
            assert {s["value"][1] for s in up["data"]["result"]} == {"1"}, up
            rules = c.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
            assert rules and rules[0]["name"] == "raymlops"
    except BaseException:
        print((tmp_path / "prometheus.log").read_text()[-3000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_every_dashboard_metric_is_exported(url, champion, mlflow_uri, training_config, data):
    app = APP
    X, y = data
    name = training_config.model_name
    client = httpx.Client(timeout=120)

    # A rollout of a copy of the champion, rolled straight back: rollout step and events.
    src = registry.get_client(mlflow_uri).get_model_version(name, champion)
    registry.use_tracking_uri(mlflow_uri)
    v2 = str(mlflow.register_model(src.source, name, tags=src.tags).version)
    r = client.post(f"{url}/admin/rollout", json={"version": v2}, headers=ADMIN)
    assert r.status_code == 200, r.text
    r = client.post(f"{url}/admin/rollout/rollback", json={}, headers=ADMIN)
    assert r.status_code == 200, r.text

    wanted = dashboard_metrics()
    pending: list[tuple[str, list[int]]] = []
    start = 0

    def drive_and_scrape():
        nonlocal start
        # Feedback for the previous burst (its records have reached the monitor by now), with
        # wrong labels: accuracy drops, the accuracy detector fires, a retraining starts.
        if pending:
            items = [{"request_id": rid, "label": labels} for rid, labels in pending]
            client.post(f"{url}/feedback", json=items, headers=FEEDBACK)
            pending.clear()
        for _ in range(6):
            rows = slice(start % (len(X) - 10), start % (len(X) - 10) + 10)
            start += 10
            r = client.post(f"{url}/predict", json={"features": X.iloc[rows].values.tolist()})
            assert r.status_code == 200, r.text
            pending.append((r.json()["request_id"], [int(1 - v) for v in y.iloc[rows]]))
        assert client.post(f"{url}/predict", json={"features": [[1.0]]}).status_code == 422
        missing = wanted - exported_names(app)
        if missing:
            raise AssertionError(f"not exported yet: {sorted(missing)}")
        return True

    try:
        wait_until(drive_and_scrape, timeout=120, interval=1.0, what="every dashboard metric")
    finally:
        client.close()
