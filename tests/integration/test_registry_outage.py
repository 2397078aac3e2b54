"""The MLflow registry down: "absent" and "unreachable" are told apart, and a controller
restarted while the tracking server is down keeps /predict answering.

A real `mlflow server` subprocess (over the session's SQLite registry) is stopped with SIGKILL
and started again on the same port; nothing is mocked.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter

import httpx
import pytest
import ray

from deployments.rollout import RolloutCore
from tests.conftest import ADMIN_TOKEN
from tests.helpers import free_port, wait_until
from training import registry
from training.data import load_dataset

pytestmark = pytest.mark.ray
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
APP = "outage-test"


class MlflowServer:
    """`mlflow server` on a fixed port over ``backend``; `stop` kills it, `start` again."""

    def __init__(self, backend: str, log_path):
        self.backend = backend
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def healthy():
            assert self.proc.poll() is None, f"mlflow server exited; see {self.log_path}"
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200

        wait_until(healthy, 300, interval=0.5, what=f"mlflow server on {self.url}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def server(trained, mlflow_uri, tmp_path_factory):
    srv = MlflowServer(mlflow_uri, tmp_path_factory.mktemp("mlflow-server") / "server.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def fail_fast(monkeypatch):
    # This process's MLflow client would retry a refused connection for minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_absent_is_none_and_unreachable_raises(server, champion, training_config, fail_fast):
    name = training_config.model_name
    up = registry.get_client(server.url)
    assert registry.alias_version(up, name, registry.CHAMPION) == champion
    assert registry.alias_version(up, name, "no-such-alias") is None
    assert registry.alias_version(up, "no-such-model", registry.CHAMPION) is None
    assert registry.model_tags(up, "no-such-model") == {}
    registry.delete_alias(up, name, "no-such-alias")  # absent is fine

    down = registry.get_client(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(registry.RegistryUnavailable):
        registry.alias_version(down, name, registry.CHAMPION)
    with pytest.raises(registry.RegistryUnavailable):
        registry.model_tags(down, name)
    with pytest.raises(registry.RegistryUnavailable):
        registry.delete_alias(down, name, registry.CHALLENGER)
    with pytest.raises(registry.RegistryUnavailable):
        registry.set_model_tag(down, name, "mlops.rollout", "")

    # A controller's state survives a bootstrap that cannot reach the registry.
    core = RolloutCore(model_name=name, client=up)
    core.bootstrap()
    before = core.checkpoint()
    core.client = down
    with pytest.raises(registry.RegistryUnavailable):
        core.bootstrap()
    assert core.checkpoint() == before and core.champion == champion


def _controller_actor():
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and f"{APP}#RolloutController#" in a["name"]
    ]
    assert len(names) == 1, names
    return ray.get_actor(names[0], namespace="serve")


def _status(url):
    return httpx.get(f"{url}/admin/rollout", headers=ADMIN, timeout=30).json()


def _gauge(application: str) -> list[float]:
    """Values of mlops_registry_reachable for ``application`` on every node's metrics port."""
    values = []
    for n in ray.nodes():
        if not n["Alive"]:
            continue
        target = f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
        for line in httpx.get(target, timeout=10).text.splitlines():
            m = re.match(r"^ray_mlops_registry_reachable\{(.*)\}\s+(\S+)", line)
            if m and f'application="{application}"' in m.group(1):
                values.append(float(m.group(2)))
    return values


def test_controller_restarted_while_the_registry_is_down_keeps_predictions_flowing(
    ray_cluster, server, champion, training_config, fail_fast
):
    from ray import serve

    from deployments.app import AppArgs, build_app

    X, _ = load_dataset(training_config.dataset)
    args = AppArgs(tracking_uri=server.url, poll_timeout_s=2.0, registry_poll_s=1.0)
    serve.run(build_app(args), name=APP, route_prefix="/", blocking=False)
    url = ray_cluster["http"]
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def stream():
        with httpx.Client(timeout=30) as c:
            i = 0
            while not stop.is_set():
                r = c.post(f"{url}/predict", json={"features": [X.iloc[i % len(X)].tolist()]})
                version = r.json().get("model_version") if r.status_code == 200 else r.text
                results.append((r.status_code, version))
                i += 1

    threads = [threading.Thread(target=stream) for _ in range(2)]
    try:
        wait_until(
            lambda: serve.status().applications[APP].status == "RUNNING",
            180,
            what=f"app {APP} RUNNING",
        )
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, 120, what="ready")
        for t in threads:
            t.start()
        wait_until(lambda: len(results) > 20, 60, what="traffic")

        server.stop()
        with pytest.raises(registry.RegistryUnavailable):
            registry.alias_version(
                registry.get_client(server.url), training_config.model_name, registry.CHAMPION
            )
        ray.kill(_controller_actor(), no_restart=False)
        status = wait_until(
            lambda: (s := _status(url)).get("registry", {}).get("reachable") is False and s,
            180,
            what="restarted controller reporting the registry unreachable",
            context=lambda: _status(url),
        )
        assert status["registry"]["last_error"] and status["registry"]["since"] > 0
        assert status["registry_reachable"] is False
        # It knows nothing it could publish but what a router held and the replicas confirm.
        assert status["known"] is False or status["provisional"] is True
        wait_until(lambda: 0.0 in _gauge(APP), 90, what="mlops_registry_reachable 0")
        n = len(results)
        wait_until(lambda: len(results) > n + 100, 120, what="traffic during the outage")
        health = httpx.get(f"{url}/health", timeout=30)
        assert health.status_code == 200, health.text

        server.start()
        status = wait_until(
            lambda: (
                (s := _status(url))["registry"]["reachable"]
                and s["known"]
                and not s["provisional"]
                and s
            ),
            180,
            what="controller back on the registry",
            context=lambda: _status(url),
        )
        assert status["champion"] == champion and status["rollout"] is None
        wait_until(lambda: 1.0 in _gauge(APP), 90, what="mlops_registry_reachable 1")
        n = len(results)
        wait_until(lambda: len(results) > n + 20, 60, what="traffic after the outage")
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join()
        serve.delete(APP)
        if server.proc is None or server.proc.poll() is not None:
            server.start()
    statuses = Counter(s for s, _ in results)
    assert set(statuses) == {200}, (statuses, [v for s, v in results if s != 200][:5])
    assert {v for _, v in results} == {champion}
