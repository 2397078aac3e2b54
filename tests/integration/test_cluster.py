"""The operator's path on this machine: a head and a worker node (two `ray start`s, as KubeRay
runs them in two pods), the Serve config deployed through the dashboard's REST API (`serve
deploy`, as the operator PUTs serveConfigV2), then the worker node lost under traffic.

The cluster is a separate set of processes from the session's `ray_cluster`, on free ports
(never 6379 / 8265 / 8000, which a `make run` cluster may hold), with its own temp dir; it only
shares the session's MLflow registry, where the `trained` fixture put a champion.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from kuberay import local_cluster
from tests.conftest import ADMIN_TOKEN, copy_version
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
SERVE = str(Path(sys.executable).with_name("serve"))
APP = "raymlops"
ROW = json.loads((ROOT / "examples" / "row.json").read_text())


class Cluster:
    def __init__(self, state: local_cluster.ClusterState, token: str, http: str):
        self.state = state
        self.http = http
        self.api = httpx.Client(
            base_url=state.dashboard_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    def nodes(self) -> list[dict]:
        r = self.api.get("/api/v0/nodes")
        r.raise_for_status()
        return r.json()["data"]["result"]["result"]

    def replicas(self) -> list[dict]:
        r = self.api.get("/api/serve/applications/")
        r.raise_for_status()
        app = r.json()["applications"].get(APP)
        if app is None:
            return []
        return [
            {"deployment": name, **replica}
            for name, dep in app["deployments"].items()
            for replica in dep["replicas"]
        ]


# The step never passes on its own (min_requests out of reach): what comes back after a
# restart is the recorded state, not a later one the analysis moved to.
ROLLOUT = {"steps": [10, 50, 100], "min_requests": 10**9, "analysis_interval_s": 0.5}


def _write_config(path: Path, http_port: int, model_replicas: int | None = None) -> Path:
    """serve_config.yaml with test ports and `ROLLOUT`; optionally more model replicas so
    some must land on the worker (the project's file keeps min_replicas 1)."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = http_port
    config["applications"][0]["args"]["rollout"] = ROLLOUT
    if model_replicas:
        for dep in config["applications"][0]["deployments"]:
            if dep["name"] in ("blue", "green"):
                dep["autoscaling_config"]["min_replicas"] = model_replicas
                dep["autoscaling_config"]["max_replicas"] = model_replicas
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _deploy(cluster: Cluster, config: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [SERVE, "deploy", "--address", cluster.state.dashboard_url, str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _healthy(http: str) -> bool:
    return httpx.get(f"{http}/health", timeout=5).status_code == 200


def _model_replicas_running(cluster: Cluster, want: int) -> list[dict]:
    reps = [r for r in cluster.replicas() if r["deployment"] in ("blue", "green")]
    running = [r for r in reps if r["state"] == "RUNNING"]
    return running if len(running) == want and len(reps) == want else []


@pytest.fixture
def two_node_cluster(trained, mlflow_uri, tmp_path):
    # Unix socket paths under the temp dir must stay short (107 bytes): not pytest's tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="rmc-", dir="/tmp")
    token = secrets.token_urlsafe(24)
    env = local_cluster.cluster_env(
        {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "MLOPS_ADMIN_TOKEN": ADMIN_TOKEN,
        }
    )
    http_port = free_port()
    state = None
    try:
        state = local_cluster.start_head(
            temp_dir, free_port(), free_port(), num_cpus=2, env=env, object_store_bytes=10**8
        )
        cluster = Cluster(state, token, f"http://127.0.0.1:{http_port}")
        yield cluster, env, http_port, tmp_path
    finally:
        # Nothing to drain in a test: a short grace, then SIGKILL.
        local_cluster.stop(temp_dir, grace_s=2)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_worker_lost_under_traffic_then_whole_cluster_restart_resumes_the_rollout(
    two_node_cluster, champion, mlflow_uri, training_config
):
    """One cluster for both failures (starting one costs tens of seconds here): the worker
    node lost under traffic with a rollout paused at its first step, then every Ray process
    gone; a new cluster with the same Serve config comes back to the rollout MLflow recorded,
    at the same step, with the same weights."""
    cluster, env, http_port, tmp_path = two_node_cluster
    http = cluster.http
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    # Deployed while the head is the only node: Router and controller live there, as they would
    # on a node that does not go away.
    _deploy(cluster, _write_config(tmp_path / "serve.yaml", http_port), env)
    wait_until(lambda: _healthy(http), timeout=120, what="/health 200 on the head")
    r = httpx.post(f"{http}/predict", json=ROW, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == champion
    v2 = copy_version(mlflow_uri, training_config.model_name, champion)
    r = httpx.post(f"{http}/admin/rollout", json={"version": v2}, headers=admin, timeout=120)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{http}/admin/rollout/pause", headers=admin, timeout=30)
    assert r.status_code == 200, r.text
    before = httpx.get(f"{http}/admin/rollout", headers=admin, timeout=30).json()
    assert before["rollout"]["version"] == v2 and before["rollout"]["paused"] is True
    assert sorted(before["weights"].values()) == pytest.approx([0.1, 0.9])

    # ---- the worker node lost under traffic ----
    local_cluster.start_worker(cluster.state, num_cpus=2, env=env, object_store_bytes=10**8)
    head_id = next(n["node_id"] for n in cluster.nodes() if n["is_head_node"])
    worker_id = wait_until(
        lambda: next(
            (
                n["node_id"]
                for n in cluster.nodes()
                if not n["is_head_node"] and n["state"] == "ALIVE"
            ),
            None,
        ),
        timeout=60,
        what="worker node ALIVE",
    )
    config = _write_config(tmp_path / "serve6.yaml", http_port, model_replicas=3)
    _deploy(cluster, config, env)
    running = wait_until(
        lambda: _model_replicas_running(cluster, 6), timeout=120, what="6 model replicas RUNNING"
    )
    on_worker = [r for r in running if r["node_id"] == worker_id]
    live = {s for s, w in httpx.get(f"{http}/health").json()["weights"].items() if w > 0}
    # Only a replica of a slot that takes traffic makes losing the worker a test of routing.
    assert {r["deployment"] for r in on_worker} & live, f"no live replica on the worker: {running}"

    results: list[tuple[int | None, str]] = []
    stop = threading.Event()

    def traffic():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    resp = client.post(f"{http}/predict", json=ROW)
                    results.append((resp.status_code, resp.text[:200]))
                except httpx.HTTPError as exc:
                    results.append((None, repr(exc)))

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        # A crash, not a drain: every process of the worker node at once.
        local_cluster.stop_session(cluster.state.worker_sid, grace_s=5, kill=True)
        t_lost = time.monotonic()
        wait_until(
            lambda: any(
                n["node_id"] == worker_id and n["state"] == "DEAD" for n in cluster.nodes()
            ),
            timeout=60,
            what="worker node DEAD",
        )
        back = wait_until(
            lambda: _model_replicas_running(cluster, 6), timeout=120, what="6 replicas back"
        )
        recovered_s = time.monotonic() - t_lost
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=35)

    assert all(r["node_id"] == head_id for r in back), back
    failed = [r for r in results if r[0] != 200]
    assert len(results) > 20, f"too little traffic to say anything: {len(results)}"
    assert not failed, (
        f"{len(failed)} of {len(results)} requests failed while the worker was lost "
        f"(replicas back on the head after {recovered_s:.1f}s): {failed[:5]}"
    )
    # Losing the worker moved nothing in the rollout.
    during = httpx.get(f"{http}/admin/rollout", headers=admin, timeout=30).json()
    assert during["weights"] == before["weights"] and during["rollout"]["paused"] is True

    # ---- every Ray process gone: a whole-cluster restart ----
    local_cluster.stop(cluster.state.temp_dir, grace_s=2)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{http}/health", timeout=2)

    state = local_cluster.start_head(
        cluster.state.temp_dir,
        free_port(),
        free_port(),
        num_cpus=2,
        env=env,
        object_store_bytes=10**8,
    )
    cluster.state = state
    cluster.api.base_url = state.dashboard_url
    _deploy(cluster, config, env)
    wait_until(lambda: _healthy(http), timeout=120, what="/health 200 after the restart")

    def resumed():
        s = httpx.get(f"{http}/admin/rollout", headers=admin, timeout=30).json()
        ro = s.get("rollout")
        return s if ro and ro["version"] == v2 and not ro.get("resumed") else None

    after = wait_until(resumed, timeout=120, what="rollout resumed from MLflow")
    assert after["champion"] == champion
    assert after["slots"] == before["slots"]
    assert after["weights"] == before["weights"]
    assert after["rollout"]["step"] == before["rollout"]["step"]
    assert after["rollout"]["paused"] is True
    # Both versions answer: the challenger's slot was reloaded before it got its share back.
    seen = set()
    with httpx.Client(timeout=30) as c:
        for _ in range(60):
            r = c.post(f"{http}/predict", json=ROW)
            assert r.status_code == 200, r.text
            seen.add(r.json()["model_version"])
    assert seen == {champion, v2}
