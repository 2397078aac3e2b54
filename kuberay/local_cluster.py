"""The operator's path on one machine: a Ray head and one worker node, each its own `ray start`.

KubeRay runs `ray start --head` in the head pod, `ray start --address=<head>:6379` in each worker
pod, and PUTs `serveConfigV2` to the dashboard's REST API. `make cluster` does the same here:
this module starts the two nodes, then the Makefile runs `serve deploy serve_config.yaml`.

Two nodes on one host share an IP, so every port a node binds is its own (raylet, object
manager, metrics, dashboard agent, runtime-env agent); the worker's Serve proxy gets its own
port (`RAY_SERVE_WORKER_PROXY_HTTP_PORT`) so clients talk to the head's proxy only, as they
would talk to the head Service in Kubernetes. Each node starts in a new session (setsid), and
the session ids are kept in `<temp-dir>/raymlops-nodes.json`: stopping a node signals exactly
the processes of its session. `ray stop` is not used because it ends every Ray on the machine
(a `make run` cluster, a test session's cluster).

    python -m kuberay.local_cluster up --temp-dir /tmp/raymlops-cluster --gcs-port 6379
    python -m kuberay.local_cluster down --temp-dir /tmp/raymlops-cluster

`make run` uses the same module with ``--head-only`` for its single-node Ray, so that `make
stop` ends that cluster and nothing else.

Two things a new machine lacks and a cluster needs are made here, never assumed:

- Ray 2.60's token: `ray start` with ``RAY_AUTH_MODE=token`` refuses to start without one, and
  only ``ray.init()`` writes ``~/.ray/auth_token`` by itself. Unless the caller gives
  ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``, the cluster uses the project's own token file
  (``.mlops/ray_auth_token``, mode 600, created on first use), which the Makefile exports to
  every command that talks to the cluster (`serve deploy`, `serve status`, `ray status`).
- HAProxy's files: Serve's HAProxy ingress runs the `haproxy` binary as a child of a proxy
  actor; when the node stops, that child is re-parented to init and keeps its ports. Each
  cluster gives HAProxy a directory of its own (recorded in the state file), and stopping the
  cluster also stops every process whose command line names that directory.
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
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "raymlops-nodes.json"
RAY = str(Path(sys.executable).with_name("ray"))
PROJECT_TOKEN = Path(__file__).resolve().parents[1] / ".mlops" / "ray_auth_token"
# HAProxy refuses socket paths over 97 bytes and Serve puts a 56-character node id and
# "/admin.sock" under the directory: it must stay within 29 bytes.
HAPROXY_DIR_MAX = 29


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ClusterState:
    temp_dir: str
    gcs_address: str
    dashboard_url: str
    head_sid: int
    worker_sid: int | None = None
    worker_proxy_port: int | None = None
    haproxy_dir: str | None = None


def _node_ports() -> list[str]:
    return [
        "--node-manager-port",
        str(free_port()),
        "--object-manager-port",
        str(free_port()),
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--dashboard-agent-grpc-port",
        str(free_port()),
        "--runtime-env-agent-port",
        str(free_port()),
    ]


def ensure_token(path: Path = PROJECT_TOKEN) -> Path:
    """The Ray auth token file at ``path``, created (mode 600, 256 random bits, the format of
    `ray get-auth-token --generate`) if it does not exist yet."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def haproxy_dir(temp_dir: str) -> str:
    """A directory of this cluster's own for Serve's HAProxy files: ``<temp-dir>/hap`` when
    that is short enough for HAProxy's socket paths, else a new one under /tmp."""
    candidate = os.path.join(os.path.abspath(temp_dir), "hap")
    if len(candidate) > HAPROXY_DIR_MAX:
        return tempfile.mkdtemp(prefix="rhp", dir="/tmp")
    Path(candidate).mkdir(parents=True, exist_ok=True)
    return candidate


def haproxy_env(hap_dir: str) -> dict[str, str]:
    """Serve's HAProxy settings that keep its files in ``hap_dir`` (default /tmp/haproxy-serve,
    shared by every Ray on the machine)."""
    hap = Path(hap_dir)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(hap / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(hap / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(hap),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(hap / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(hap / "metrics.sock"),
    }


def private_fast_path_env(hap_dir: str) -> dict[str, str]:
    """Serve's fast path (direct ingress, HAProxy) for a cluster that shares the machine:
    HAProxy's files in ``hap_dir`` and its stats, metrics and fallback ports free ones, not
    the defaults (8404, 9101, ...) another cluster may hold. Used by the benchmark and the
    chaos test; `make run` keeps the default ports."""
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        **haproxy_env(hap_dir),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
    }


def cluster_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every node (and so every actor) of the cluster gets: token auth with a
    token that exists (the caller's, or the project's own file, created if missing)."""
    env = dict(os.environ)
    # A RAY_ADDRESS from the caller (a test session's driver) would make `ray start --head`
    # join that cluster instead of starting one.
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_AUTH_MODE", "token")
    env.update(extra or {})
    if env["RAY_AUTH_MODE"] == "token" and not env.get("RAY_AUTH_TOKEN"):
        env["RAY_AUTH_TOKEN_PATH"] = str(
            ensure_token(Path(env.get("RAY_AUTH_TOKEN_PATH") or PROJECT_TOKEN))
        )
    return env


def _start(args: list[str], env: dict[str, str], attempts: int = 2) -> int:
    """Run `ray start` in a new session; its session id is the one every node process keeps.

    A node's `ray start` gives up when the GCS or its own agents do not answer in time ("The
    current node timed out during startup"), which a busy 2-core machine can cause; a failed
    attempt's processes are stopped, so the next one starts clean."""
    attempt = 1
    while True:
        proc = subprocess.Popen(
            [RAY, "start", *args, "--disable-usage-stats"],
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            stop_session(proc.pid, grace_s=0, kill=True)
            raise
        if proc.returncode == 0:
            return proc.pid
        stop_session(proc.pid)
        if attempt >= attempts:
            raise RuntimeError(f"ray start failed ({proc.returncode}):\n{out}")
        print(f"ray start failed, trying once more: {out[-300:]}", file=sys.stderr)
        time.sleep(2)
        attempt += 1


def _node_args(
    temp_dir: str, num_cpus: int, object_store_bytes: int, metrics_port: int | None
) -> list[str]:
    """`ray start` arguments every node of a local cluster takes."""
    return [
        "--node-ip-address",
        "127.0.0.1",
        "--metrics-export-port",
        str(metrics_port or free_port()),
        "--num-cpus",
        str(num_cpus),
        "--object-store-memory",
        str(object_store_bytes),
        "--temp-dir",
        temp_dir,
        *_node_ports(),
    ]


def start_head(
    temp_dir: str,
    gcs_port: int,
    dashboard_port: int,
    num_cpus: int,
    metrics_port: int | None = None,
    object_store_bytes: int = 300_000_000,
    env: dict[str, str] | None = None,
) -> ClusterState:
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    env = dict(env or cluster_env())
    if env.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"):  # the caller chose HAProxy's files
        hap_dir = os.path.dirname(env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"])
    else:
        hap_dir = haproxy_dir(temp_dir)
        env.update(haproxy_env(hap_dir))
    sid = _start(
        [
            "--head",
            "--port",
            str(gcs_port),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard_port),
            "--ray-client-server-port",
            str(free_port()),
            *_node_args(temp_dir, num_cpus, object_store_bytes, metrics_port),
        ],
        env,
    )
    state = ClusterState(
        temp_dir=temp_dir,
        gcs_address=f"127.0.0.1:{gcs_port}",
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        head_sid=sid,
        haproxy_dir=hap_dir,
    )
    save(state)
    return state


def start_worker(
    state: ClusterState,
    num_cpus: int,
    metrics_port: int | None = None,
    object_store_bytes: int = 300_000_000,
    env: dict[str, str] | None = None,
) -> ClusterState:
    proxy_port = free_port()
    node_env = dict(env or cluster_env())
    node_env["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] = str(proxy_port)
    if state.haproxy_dir and not node_env.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"):
        node_env.update(haproxy_env(state.haproxy_dir))
    sid = _start(
        [
            "--address",
            state.gcs_address,
            *_node_args(state.temp_dir, num_cpus, object_store_bytes, metrics_port),
        ],
        node_env,
    )
    state.worker_sid = sid
    state.worker_proxy_port = proxy_port
    save(state)
    return state


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) == sid:
                pids.append(int(entry))
        except OSError:  # exited while we looked
            continue
    return pids


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_sessions(sids: list[int], grace_s: float = 10.0, kill: bool = False) -> None:
    """Stop every process of these nodes: SIGTERM (SIGKILL with ``kill``: a crash), then
    SIGKILL whatever is left after ``grace_s`` (a raylet may take that long to drain)."""

    def alive() -> list[int]:
        return [pid for sid in sids for pid in session_pids(sid)]

    _signal(alive(), signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal(alive(), signal.SIGKILL)


def stop_session(sid: int, grace_s: float = 10.0, kill: bool = False) -> None:
    stop_sessions([sid], grace_s, kill)


def save(state: ClusterState) -> None:
    Path(state.temp_dir, STATE_FILE).write_text(json.dumps(asdict(state), indent=2))


def load(temp_dir: str) -> ClusterState | None:
    path = Path(temp_dir, STATE_FILE)
    if not path.exists():
        return None
    return ClusterState(**json.loads(path.read_text()))


def running(state: ClusterState | None) -> bool:
    return state is not None and bool(session_pids(state.head_sid))


def processes_naming(path: str) -> list[int]:
    """Processes with an argument that is ``path`` or lies under it (HAProxy's ``-f
    <dir>/<node id>/haproxy.cfg``): the ones a node leaves behind outside its session."""
    prefix = os.path.abspath(path).rstrip("/") + "/"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:  # exited while we looked
            continue
        if any(a == prefix[:-1] or a.startswith(prefix) for a in args):
            pids.append(int(entry))
    return pids


def stop_haproxy(hap_dir: str, grace_s: float = 5.0) -> None:
    """Stop the HAProxy processes of one cluster (those whose command line names its
    directory) and remove a directory this module made under /tmp."""
    _signal(processes_naming(hap_dir), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while processes_naming(hap_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal(processes_naming(hap_dir), signal.SIGKILL)
    if os.path.basename(hap_dir).startswith("rhp") and os.path.dirname(hap_dir) == "/tmp":
        shutil.rmtree(hap_dir, ignore_errors=True)


def stop(temp_dir: str, grace_s: float = 10.0) -> bool:
    """Stop the nodes recorded in this temp dir, and the HAProxy they started; False if none
    was recorded."""
    state = load(temp_dir)
    if state is None:
        return False
    stop_sessions([sid for sid in (state.worker_sid, state.head_sid) if sid], grace_s)
    if state.haproxy_dir:
        stop_haproxy(state.haproxy_dir)
    Path(temp_dir, STATE_FILE).unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kuberay.local_cluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--temp-dir", default="/tmp/raymlops-cluster", help="keep it short")
    parser.add_argument("--gcs-port", type=int, default=6379)
    parser.add_argument("--dashboard-port", type=int, default=8265)
    parser.add_argument("--head-cpus", type=int, default=2)
    parser.add_argument("--worker-cpus", type=int, default=2)
    parser.add_argument("--head-metrics-port", type=int, default=None)
    parser.add_argument("--worker-metrics-port", type=int, default=None)
    parser.add_argument(
        "--head-only", action="store_true", help="no worker node (make run's single-node Ray)"
    )
    args = parser.parse_args(argv)

    state = load(args.temp_dir)
    if args.command == "down":
        print("stopped" if stop(args.temp_dir) else f"no cluster recorded in {args.temp_dir}")
        return 0
    if args.command == "status":
        if not running(state):
            print("not running")
            return 1
        print(json.dumps(asdict(state), indent=2))
        return 0
    if running(state):
        print(f"already running: head {state.gcs_address}, dashboard {state.dashboard_url}")
        return 0
    state = start_head(
        args.temp_dir,
        args.gcs_port,
        args.dashboard_port,
        args.head_cpus,
        metrics_port=args.head_metrics_port,
    )
    print(
        f"head   {state.gcs_address}  dashboard {state.dashboard_url}  (session {state.head_sid})"
    )
    if args.head_only:
        return 0
    try:
        start_worker(state, args.worker_cpus, metrics_port=args.worker_metrics_port)
    except Exception:
        stop(args.temp_dir)
        raise
    print(f"worker joined {state.gcs_address}  (session {state.worker_sid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
