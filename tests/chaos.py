"""Chaos run: the app as `make run` serves it, one component killed at a time under traffic.

    python -m tests.chaos --out /tmp/chaos.json

A Ray head of its own (``kuberay.local_cluster``: free ports, a short temp dir, a token of its
own) with Serve's fast path as `make run` sets it (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1
RAY_SERVE_ENABLE_HA_PROXY=1``, HAProxy in front), the registry an ``mlflow server`` subprocess
(SQLite backend, artifacts in a local directory the replicas read directly) so that it can be
made unreachable, a first model fitted and registered into it, and `serve deploy` of the project's
serve_config.yaml (only the HTTP port changed). Then a steady stream of POST /predict (rows of
the training dataset, so the drift monitor sees no drift) and a /health poller run while, one
at a time:

1. one replica of the live model slot is killed,
2. one Router replica is killed,
3. the RolloutController replica is killed,
4. the DriftMonitor replica is killed,
5. the tracking server's address goes dark (connections refused, open ones reset: `Outage`),
   the controller is killed, and the address answers again 20 s later.

Each phase records the requests that completed in it, the failed ones (any non-200, any
connection error; a request whose connection was closed without an answer is sent once more,
as HTTP lets a client do: see UNANSWERED), /health answers other than 200, and how long the
component took to be back (replica RUNNING again in `serve status` and its route answering).
The result is JSON (``--out`` and the last line of stdout); tests/integration/test_chaos.py
asserts on it.

It runs in a process of its own because a driver joins one Ray cluster only, and a pytest
session may already be the driver of its session cluster. Everything it starts is stopped in a
``finally``: the nodes by their session id and HAProxy by its directory
(``local_cluster.stop``), the tracking server by its process group.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from kuberay import local_cluster
from kuberay.local_cluster import free_port
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
APP = "raymlops"
MODEL_NAME = "breast_cancer_classifier"

# HAProxy's retry policy for the ingress (Router) backend. Serve's default retries only a
# connection that failed before anything was sent ("conn-failure"). A Router replica killed
# with requests in flight resets their connections without an answer: "empty-response" lets
# HAProxy send those again, and `option redispatch 1` (in Serve's template) sends the retry to
# another Router. Predictions are idempotent, so a replay is safe. HAProxy replays only a
# request that fits whole in one buffer (Serve's default tune.bufsize: 16 KiB, about 20 rows of
# 30 features): a larger one whose Router died is closed without an answer ("Server disconnected
# without sending a response"). 1 MiB covers 1,024 rows of 30 features (~0.7 MB as JSON); HAProxy
# takes buffers per active stream from a pool, so memory grows with requests in flight
# (2 x bufsize each), not with RAY_SERVE_HAPROXY_MAXCONN alone.
HAPROXY_RETRY_ENV = {
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
    "RAY_SERVE_HAPROXY_RETRIES": "3",
    "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": "1048576",
}
# At each kill, this many requests of this many rows are in flight (the kill follows the burst
# by BURST_LEAD_S), so that a kill that fails in-flight requests shows, which a light steady
# stream alone would catch only by chance.
BURST_REQUESTS = 24
BURST_ROWS = 512
BURST_LEAD_S = 0.1  # between sending the burst and the kill
OUTAGE_S = 20.0  # how long the tracking server stays down in phase 5


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- the tracking server ---------------------------------------------------------------------
class TrackingServer:
    """``mlflow server`` on a SQLite file, artifacts in a local directory (served by nobody:
    clients and replicas read and write them directly, as the default SQLite setup does). It
    runs in a process group of its own so `stop` ends its workers too."""

    def __init__(self, root: Path, port: int):
        self.root = root
        self.port = port
        self.db = root / "mlflow.db"
        self.artifacts = root / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> float:
        """Start the server; returns seconds until it answered."""
        t0 = time.monotonic()
        self.launch()
        self.wait(timeout)
        return time.monotonic() - t0

    def launch(self) -> None:
        """Start the server's process (it answers some seconds later: see `wait`)."""
        logf = open(self.root / "server.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.db}",
                "--default-artifact-root",
                str(self.artifacts),
                "--no-serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        )
        logf.close()

    def wait(self, timeout: float) -> None:
        wait_until(self.answers, timeout, interval=0.5, what="tracking server answering")

    def answers(self) -> bool:
        return httpx.get(f"{self.uri}/health", timeout=2).status_code == 200

    def stop(self) -> None:
        """SIGKILL the whole process group: the registry is gone at once, as in a crash."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None


class Outage:
    """A TCP forwarder in front of the tracking server: the address the app knows. `cut`
    closes it and resets every open connection (clients get "connection refused" and
    "connection reset", as when the server's host goes away); `restore` listens again at once.
    The server itself stays up: an ``mlflow server`` restart takes 20-80 s on a busy 2-core
    machine, which would make the outage as long as the machine is slow rather than as long as
    the test says."""

    def __init__(self, target_port: int):
        self.port = free_port()
        self.target_port = target_port
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._acceptor: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.port))
        lsock.listen(128)
        lsock.settimeout(0.2)
        self._stop = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept, args=(lsock, self._stop), daemon=True
        )
        self._acceptor.start()

    def cut(self) -> None:
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                # Linger 0: close() sends a reset, not an orderly end of the stream.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    def _accept(self, lsock: socket.socket, stop: threading.Event) -> None:
        with lsock:
            while not stop.is_set():
                try:
                    client, _ = lsock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                client.settimeout(None)
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port), 10)
                    upstream.settimeout(None)
                except OSError:
                    client.close()
                    continue
                with self._lock:
                    self._conns.update((client, upstream))
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            for sock in (src, dst):
                if sock in self._conns:
                    self._conns.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.close()


# ---- traffic ---------------------------------------------------------------------------------
@dataclass
class Result:
    t_end: float  # monotonic time the answer (or the error) came back
    status: int | None  # None: no HTTP answer (connection error, timeout)
    detail: str
    resent: bool = False  # sent a second time after a connection closed without an answer


# What HAProxy does when a Router dies with a request on a reused backend connection
# (`http-reuse always` in Serve's template) before the request body was whole in its buffer,
# so its L7 retry cannot replay it: it closes the client's connection without an answer and
# without a log line, HTTP's signal that the request may be sent again (haproxy/haproxy#3414,
# #2375; `option http-buffer-request`, which would let HAProxy replay it itself, is not
# settable through Serve). A client that follows HTTP sends an idempotent request again;
# /predict is idempotent. A second failure, a timeout or any HTTP error status is a failure.
UNANSWERED = "Server disconnected without sending a response"


def post_once_more_if_unanswered(post) -> Result:
    resent = False
    for attempt in (1, 2):
        try:
            r = post()
            detail = "" if r.status_code == 200 else r.text[:300]
            return Result(time.monotonic(), r.status_code, detail, resent)
        except httpx.RemoteProtocolError as exc:
            if attempt == 1 and UNANSWERED in str(exc):
                resent = True
                continue
            return Result(time.monotonic(), None, repr(exc)[:300], resent)
        except httpx.HTTPError as exc:
            return Result(time.monotonic(), None, repr(exc)[:300], resent)
    raise AssertionError("unreachable")


class Traffic:
    """``threads`` clients, each sending POST /predict at ``rate`` per second on its own
    keep-alive connection (a client of HAProxy, which stays up), plus one /health poller."""

    def __init__(self, http: str, rows: list[list[float]], threads: int = 2, rate: float = 12.0):
        self.http = http
        self.rows = rows
        self.threads = threads
        self.rate = rate
        self.predictions: list[Result] = []
        self.health: list[Result] = []
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> Traffic:
        for i in range(self.threads):
            self._workers.append(threading.Thread(target=self._predict, args=(i,), daemon=True))
        self._workers.append(threading.Thread(target=self._health, daemon=True))
        for t in self._workers:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=40)

    def _add(self, into: list[Result], result: Result) -> None:
        with self._lock:
            into.append(result)

    def _predict(self, worker: int) -> None:
        # Timeout above serve_config's request_timeout_s (30 s): Serve answers first.
        with httpx.Client(base_url=self.http, timeout=40) as client:
            i, next_t = worker, time.monotonic()
            while not self._stop.is_set():
                row = self.rows[i % len(self.rows)]
                i += self.threads
                body = {"features": [row]}
                res = post_once_more_if_unanswered(
                    lambda body=body: client.post("/predict", json=body)
                )
                self._add(self.predictions, res)
                next_t += 1.0 / self.rate
                self._stop.wait(max(0.0, next_t - time.monotonic()))
                next_t = max(next_t, time.monotonic() - 1.0)  # no burst after a slow answer

    def _health(self) -> None:
        with httpx.Client(base_url=self.http, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    r = client.get("/health")
                    detail = "" if r.status_code == 200 else r.text[:300]
                    self._add(self.health, Result(time.monotonic(), r.status_code, detail))
                except httpx.HTTPError as exc:
                    self._add(self.health, Result(time.monotonic(), None, repr(exc)[:300]))
                self._stop.wait(0.25)

    def burst(self, n: int, rows_per_request: int) -> Burst:
        """``n`` requests of ``rows_per_request`` rows each, sent at once on connections of
        their own: they take long enough in the routers and the model replicas that a kill
        BURST_LEAD_S after sending finds them in flight."""
        return Burst(self, n, rows_per_request).start()

    def between(self, which: str, t0: float, t1: float) -> list[Result]:
        with self._lock:
            return [r for r in getattr(self, which) if t0 <= r.t_end < t1]


class Burst:
    def __init__(self, traffic: Traffic, n: int, rows_per_request: int):
        self.traffic = traffic
        self.n = n
        self.rows_per_request = rows_per_request
        self.results: list[Result] = []
        self._threads: list[threading.Thread] = []
        self._first = threading.Event()

    def start(self) -> Burst:
        rows = self.traffic.rows
        for i in range(self.n):
            start = (i * self.rows_per_request) % len(rows)
            body = {"features": (rows[start:] + rows[:start])[: self.rows_per_request]}
            self._threads.append(threading.Thread(target=self._send, args=(body,), daemon=True))
        for t in self._threads:
            t.start()
        return self

    def _send(self, body: dict[str, Any]) -> None:
        url = f"{self.traffic.http}/predict"
        res = post_once_more_if_unanswered(lambda: httpx.post(url, json=body, timeout=40))
        res.detail = f"burst: {res.detail[:300]}" if res.detail else ""
        self.traffic._add(self.traffic.predictions, res)
        self.results.append(res)
        self._first.set()

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=45)

    def in_flight_after(self, t: float) -> int:
        """Requests of the burst answered after ``t``: in flight at that moment."""
        return sum(1 for r in self.results if r.t_end > t)


# ---- the app: Serve status, replicas, routes -------------------------------------------------
class App:
    def __init__(self, http: str, admin_token: str, dashboard_url: str, ray_token: str):
        self.http = http
        self.dashboard = httpx.Client(
            base_url=dashboard_url, headers={"Authorization": f"Bearer {ray_token}"}, timeout=15
        )
        self.admin = httpx.Client(
            base_url=http, headers={"Authorization": f"Bearer {admin_token}"}, timeout=15
        )

    def running(self, deployment: str) -> int:
        return sum(1 for r in self.replicas(deployment) if r["state"] == "RUNNING")

    def replicas(self, deployment: str) -> list[dict[str, Any]]:
        """The deployment's replicas as the Serve controller lists them (actor name, state):
        unlike the counts of `serve.status()`, a killed replica is told apart by its name."""
        r = self.dashboard.get("/api/serve/applications/")
        r.raise_for_status()
        app = r.json()["applications"].get(APP) or {}
        return (app.get("deployments", {}).get(deployment) or {}).get("replicas", [])

    def pick(self, deployment: str) -> tuple[Any, str, int]:
        """One replica of ``deployment`` to kill (its handle and name) and how many are
        RUNNING now."""
        import ray

        running = [r for r in self.replicas(deployment) if r["state"] == "RUNNING"]
        assert running, f"no RUNNING replica of {deployment}"
        victim = running[0]["actor_name"]
        return ray.get_actor(victim, namespace="serve"), victim, len(running)

    @staticmethod
    def kill(handle) -> None:
        """A crash: no graceful stop, no Ray restart; Serve notices and starts a new one."""
        import ray

        ray.kill(handle, no_restart=True)

    def replica_back(self, deployment: str, victim: str, want: int) -> bool:
        reps = self.replicas(deployment)
        running = [r for r in reps if r["state"] == "RUNNING"]
        return victim not in {r["actor_name"] for r in reps} and len(running) >= want

    def health(self) -> dict[str, Any] | None:
        r = httpx.get(f"{self.http}/health", timeout=5)
        return r.json() if r.status_code == 200 else None

    def rollout(self) -> dict[str, Any] | None:
        r = self.admin.get("/admin/rollout")
        return r.json() if r.status_code == 200 else None

    def monitor(self) -> dict[str, Any] | None:
        r = self.admin.get("/monitor/status")
        return r.json() if r.status_code == 200 else None


def registry_gauge() -> list[float]:
    """Values of ``mlops_registry_reachable`` for the app on every alive node's metrics port
    (Ray's agent exports what the controller set, every report interval: 10 s by default)."""
    import re

    import ray

    values = []
    for n in ray.nodes():
        if not n["Alive"]:
            continue
        target = f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
        with contextlib.suppress(httpx.HTTPError):
            for line in httpx.get(target, timeout=10).text.splitlines():
                m = re.match(r"^ray_mlops_registry_reachable\{(.*)\}\s+(\S+)", line)
                if m and f'application="{APP}"' in m.group(1):
                    values.append(float(m.group(2)))
    return values


def registry_reachable(status: dict[str, Any] | None) -> bool | None:
    if status is None:
        return None
    reg = status.get("registry")
    return reg.get("reachable") if isinstance(reg, dict) else None


def controller_synced(status: dict[str, Any] | None, champion: str) -> bool:
    """The controller has read the registry (not a provisional or unknown state) and sees the
    champion."""
    return (
        status is not None
        and status.get("known", True)
        and not status.get("provisional", False)
        and registry_reachable(status) is not False
        and status.get("champion") == champion
    )


# ---- phases ----------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    component: str
    t0: float = 0.0
    t1: float = 0.0
    requests: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    resent: int = 0  # answered after a second send (see UNANSWERED)
    health_checks: int = 0
    health_failed: int = 0
    health_failures: list[dict[str, Any]] = field(default_factory=list)
    recovery_s: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def count(self, traffic: Traffic) -> None:
        preds = traffic.between("predictions", self.t0, self.t1)
        bad = [r for r in preds if r.status != 200]
        self.requests, self.failed = len(preds), len(bad)
        self.resent = sum(1 for r in preds if r.resent and r.status == 200)
        self.failures = [
            {"t": round(r.t_end - self.t0, 2), "status": r.status, "detail": r.detail}
            for r in bad[:10]
        ]
        checks = traffic.between("health", self.t0, self.t1)
        hbad = [r for r in checks if r.status != 200]
        self.health_checks, self.health_failed = len(checks), len(hbad)
        self.health_failures = [
            {"t": round(r.t_end - self.t0, 2), "status": r.status, "detail": r.detail}
            for r in hbad[:5]
        ]


def run_phases(app: App, traffic: Traffic, outage: Outage, bound_s: float):
    phases: list[Phase] = []
    bursts: list[tuple[Phase, Burst, float]] = []
    champion = app.health()["champion"]
    live = sorted(s for s, w in app.health()["weights"].items() if w > 0)

    def kill_under_burst(phase: Phase, deployment: str) -> tuple[str, int, float]:
        handle, victim, want = app.pick(deployment)
        burst = traffic.burst(BURST_REQUESTS, BURST_ROWS)
        # Kill while the burst is on its way in. Waiting for its first answer is too late:
        # the Router coalesces the burst into one model call, answered all at once.
        time.sleep(BURST_LEAD_S)
        t_kill = time.monotonic()
        app.kill(handle)
        bursts.append((phase, burst, t_kill))
        return victim, want, t_kill

    def replica_phase(name: str, deployment: str, route_ok) -> Phase:
        phase = Phase(name, deployment, t0=time.monotonic())
        victim, want, t_kill = kill_under_burst(phase, deployment)
        log(f"{name}: killed {victim} ({want} RUNNING before)")
        wait_until(
            lambda: app.replica_back(deployment, victim, want), bound_s, what=f"{deployment} back"
        )
        phase.recovery_s["replica_running"] = round(time.monotonic() - t_kill, 2)
        wait_until(route_ok, bound_s, what=f"{deployment}'s route answering")
        phase.recovery_s["answering"] = round(time.monotonic() - t_kill, 2)
        phase.notes["killed"] = victim
        return phase

    def settle(phase: Phase) -> None:
        time.sleep(3.0)  # traffic after the recovery counts too
        for owner, burst, t_kill in bursts:
            if owner is phase:
                burst.join()
                phase.notes["burst_in_flight_at_kill"] = burst.in_flight_after(t_kill)
        phase.t1 = time.monotonic()
        phase.count(traffic)
        phases.append(phase)
        log(
            f"{phase.name}: {phase.requests} requests, {phase.failed} failed, "
            f"{phase.resent} answered on a second send, "
            f"/health non-200 {phase.health_failed}/{phase.health_checks}, "
            f"recovery {phase.recovery_s}, burst in flight at the kill "
            f"{phase.notes.get('burst_in_flight_at_kill')}/{BURST_REQUESTS}"
            + (f", failures {phase.failures[:3]}" if phase.failed else "")
        )

    slot = live[0]
    settle(
        replica_phase(
            f"model replica ({slot})",
            slot,
            lambda: app.health() is not None,
        )
    )
    settle(replica_phase("router replica", "Router", lambda: app.health() is not None))
    settle(
        replica_phase(
            "controller", "RolloutController", lambda: controller_synced(app.rollout(), champion)
        )
    )
    settle(replica_phase("drift monitor", "DriftMonitor", lambda: app.monitor() is not None))

    # Phase 5: the registry unreachable while the controller restarts.
    phase = Phase("controller restart, registry down", "RolloutController", t0=time.monotonic())
    outage.cut()
    t_down = time.monotonic()
    log("registry down: its address refuses connections, open ones reset")
    time.sleep(1.0)
    victim, want, t_kill = kill_under_burst(phase, "RolloutController")
    log(f"registry down: killed {victim}")
    wait_until(
        lambda: app.replica_back("RolloutController", victim, want),
        bound_s,
        what="controller back",
    )
    phase.recovery_s["replica_running"] = round(time.monotonic() - t_kill, 2)
    during = wait_until(
        app.rollout, bound_s, what="controller answering while the registry is down"
    )
    phase.recovery_s["answering"] = round(time.monotonic() - t_kill, 2)
    phase.notes["status_during_outage"] = {
        "registry_reachable": registry_reachable(during),
        "registry": during.get("registry"),
        "known": during.get("known"),
        "provisional": during.get("provisional"),
        "champion": during.get("champion"),
        "slots": during.get("slots"),
        "weights": during.get("weights"),
    }
    phase.notes["health_during_outage"] = app.health()
    # The outage shows on the metrics port too (what an alert rule reads): the gauge goes to 0.
    # The outage lasts until it does (within the bound), at least OUTAGE_S.
    phase.notes["gauge_during_outage"] = wait_until(
        lambda: (v := registry_gauge()) and 0.0 in v and v,
        bound_s,
        interval=1.0,
        what="mlops_registry_reachable 0 during the outage",
    )
    time.sleep(max(0.0, t_down + OUTAGE_S - time.monotonic()))
    outage.restore()
    t_up = time.monotonic()
    log(f"registry reachable again after {t_up - t_down:.1f}s")
    wait_until(
        lambda: controller_synced(app.rollout(), champion), bound_s, what="controller re-synced"
    )
    phase.recovery_s["registry_resynced"] = round(time.monotonic() - t_up, 2)
    phase.notes["gauge_after_outage"] = wait_until(
        lambda: (v := registry_gauge()) and 0.0 not in v and v,
        bound_s,
        interval=1.0,
        what="mlops_registry_reachable back to 1",
    )
    phase.notes["outage_s"] = round(t_up - t_down, 1)
    settle(phase)
    return phases


def register_first_model(tracking_uri: str) -> str:
    """Fit one logistic regression and register it as champion, as `python -m training` does
    after its search (same pipeline, signature, reference sample and tags): the subject here
    is failure handling, not the search, which costs tens of seconds on this machine."""
    from configs import load_training_config
    from training import registry
    from training.data import load_dataset
    from training.train import evaluate, fit_and_log, holdout_split, register

    cfg = load_training_config().model_copy(update={"model_name": MODEL_NAME})
    registry.use_tracking_uri(tracking_uri)
    client = registry.get_client(tracking_uri)
    exp_id = registry.ensure_experiment(client, cfg.experiment_name, tracking_uri)
    X, y = load_dataset(cfg.dataset, cfg.target)
    X_train, X_test, y_train, y_test = holdout_split(cfg, X, y)
    import mlflow

    config = {"family": "logistic_regression", "lr_C": 1.0, "seed": cfg.seed}
    with mlflow.start_run(experiment_id=exp_id, run_name="chaos-first-model"):
        model, info = fit_and_log(
            config,
            X_train,
            y_train,
            reference_size=cfg.reference_sample_size,
            seed=cfg.seed,
            dataset_name=cfg.dataset,
        )
        scores = evaluate(model, X_test, y_test)
        version = register(
            client,
            cfg,
            info,
            feature_names=list(X.columns),
            classes=[int(c) for c in model.classes_],
            metrics=scores,
            family=config["family"],
        )
    registry.set_alias(client, MODEL_NAME, registry.CHAMPION, version)
    return f"v{version} champion (test accuracy {scores['accuracy']:.3f})"


# ---- setup -----------------------------------------------------------------------------------
def cluster_env(temp_dir: str, tracking_uri: str, retry_env: dict[str, str]) -> dict[str, str]:
    """What every process of the cluster (and this driver) gets: the token, the registry, the
    app's tokens, `make run`'s SERVE_ENV, HAProxy's files and ports of this cluster's own."""
    hap = local_cluster.haproxy_dir(temp_dir)
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_urlsafe(24),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLOPS_ADMIN_TOKEN": secrets.token_urlsafe(24),
        "MLOPS_FEEDBACK_TOKEN": secrets.token_urlsafe(24),
        "RAY_DEDUP_LOGS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        **local_cluster.private_fast_path_env(hap),
        **retry_env,
    }


def serve_config(path: Path, http_port: int) -> Path:
    """The project's serve_config.yaml with this run's HTTP port (nothing else changed)."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = http_port
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def deploy(dashboard_url: str, config: Path, env: dict[str, str]) -> None:
    def attempt() -> bool:
        proc = subprocess.run(
            [str(BIN / "serve"), "deploy", "--address", dashboard_url, str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-500:] + proc.stderr[-1000:])
        return True

    # The dashboard's REST API may still be starting right after `ray start`.
    wait_until(attempt, 120, interval=3, what="serve deploy accepted")


def training_rows() -> list[list[float]]:
    from configs import load_training_config
    from training.data import load_dataset

    cfg = load_training_config()
    X, _ = load_dataset(cfg.dataset, cfg.target)
    return X.sample(frac=1.0, random_state=0).to_numpy(dtype=float).tolist()


def diagnostics() -> dict[str, Any]:
    """What explains a failed run: Serve's view of the app."""
    out: dict[str, Any] = {}
    try:
        from ray import serve

        app = serve.status().applications.get(APP)
        out["serve_status"] = (
            None
            if app is None
            else {
                "status": str(app.status),
                "message": app.message[-1000:],
                "deployments": {
                    name: {
                        "status": str(d.status),
                        "replicas": dict(d.replica_states),
                        "message": d.message[-500:],
                    }
                    for name, d in app.deployments.items()
                },
            }
        )
    except Exception as exc:
        out["serve_status"] = repr(exc)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--out", help="write the JSON result here too")
    parser.add_argument("--logs", help="copy the cluster's logs here before it stops")
    parser.add_argument("--bound-s", type=float, default=90.0, help="longest wait per recovery")
    parser.add_argument(
        "--haproxy-retry-on",
        default=HAPROXY_RETRY_ENV["RAY_SERVE_HAPROXY_RETRY_ON"],
        help="HAProxy retry-on for the run ('conn-failure' is Serve's default)",
    )
    args = parser.parse_args(argv)
    if "ray" in sys.modules:
        raise RuntimeError("tests.chaos must set the environment before ray is imported")

    t_start = time.monotonic()
    temp_dir = tempfile.mkdtemp(prefix="rch", dir="/tmp")  # short: socket paths under it
    work = Path(tempfile.mkdtemp(prefix="raymlops-chaos-"))
    tracking = TrackingServer(work / "mlflow", free_port())
    retry_env = {**HAPROXY_RETRY_ENV, "RAY_SERVE_HAPROXY_RETRY_ON": args.haproxy_retry_on}
    outage = Outage(tracking.port)
    env = cluster_env(temp_dir, outage.uri, retry_env)
    os.environ.update(env)
    os.environ.pop("RAY_ADDRESS", None)
    result: dict[str, Any] = {"env": {k: v for k, v in retry_env.items()}, "ok": False}
    traffic: Traffic | None = None
    try:
        # The server starts while Ray does (each takes tens of seconds on a busy machine).
        tracking.launch()
        outage.restore()
        state = local_cluster.start_head(
            temp_dir,
            free_port(),
            free_port(),
            num_cpus=4,
            env=local_cluster.cluster_env(env),
            object_store_bytes=10**8,
        )
        log(f"ray head {state.gcs_address} (temp dir {temp_dir})")
        tracking.wait(180)
        log(f"tracking server {tracking.uri}")
        import ray

        ray.init(address=state.gcs_address, log_to_driver=False)
        trained = register_first_model(outage.uri)
        log(f"registered: {trained}")
        result["setup_s"] = {"trained": round(time.monotonic() - t_start, 1)}

        http_port = free_port()
        http = f"http://127.0.0.1:{http_port}"
        deploy(state.dashboard_url, serve_config(work / "serve.yaml", http_port), env)
        app = App(http, env["MLOPS_ADMIN_TOKEN"], state.dashboard_url, env["RAY_AUTH_TOKEN"])

        def ready() -> bool:
            health = app.health()
            return (
                health is not None
                and app.running("Router") >= 2
                and all(app.running(s) >= 1 for s, w in health["weights"].items() if w > 0)
            )

        wait_until(ready, 300, what="app healthy, two Routers and the live slot RUNNING")
        result["setup_s"]["healthy"] = round(time.monotonic() - t_start, 1)
        result["replicas"] = {
            d: app.running(d) for d in ("Router", "blue", "green", "RolloutController")
        }
        log(f"app healthy at {http}: {app.health()}; replicas {result['replicas']}")

        traffic = Traffic(http, training_rows()).start()
        time.sleep(3.0)
        warmup_end = time.monotonic()
        phases = run_phases(app, traffic, outage, args.bound_s)
        traffic.stop()
        warm = traffic.between("predictions", 0.0, warmup_end)
        result["warmup"] = {
            "requests": len(warm),
            "failed": sum(1 for r in warm if r.status != 200),
        }
        result["phases"] = [asdict(p) for p in phases]
        result["total"] = {
            "requests": len(traffic.predictions),
            "failed": sum(1 for r in traffic.predictions if r.status != 200),
            "resent": sum(1 for r in traffic.predictions if r.resent and r.status == 200),
            "health_failed": sum(1 for r in traffic.health if r.status != 200),
        }
        result["ok"] = True
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        log(f"run failed: {result['error']}")
        result["diagnostics"] = diagnostics()
    finally:
        if args.logs:
            # The cluster's logs go with its temp dir: keep a copy (the router's log has the
            # traceback of every failed request, under its request id).
            with contextlib.suppress(OSError):
                shutil.copytree(
                    Path(temp_dir, "session_latest", "logs"), args.logs, dirs_exist_ok=True
                )
        if traffic is not None:
            traffic.stop()
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        local_cluster.stop(temp_dir, grace_s=2)
        outage.cut()
        tracking.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text)
    print(text, flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
