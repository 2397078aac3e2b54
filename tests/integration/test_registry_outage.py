"""The MLflow registry down: "absent" and "unreachable" are told apart.

A controller restarted while the tracking server is down, under a stream of /predict, is a
phase of the chaos run (tests/chaos.py, phase 5): no failed prediction, the outage in the
controller's status and on the metrics port, and the re-sync once the server answers.

A real `mlflow server` subprocess (over the session's SQLite registry) is stopped with SIGKILL
and started again on the same port; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from deployments.rollout import RolloutCore
from tests.helpers import free_port, wait_until
from training import registry

pytestmark = pytest.mark.ray


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
