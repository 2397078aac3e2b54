"""`python -m benchmarks`: our stack against a one-process FastAPI + uvicorn baseline and
against Ray Serve's own floor (benchmarks/floor.py).

One run does, in order (see benchmarks/README.md):

1. a fresh MLflow registry (SQLite in the work dir) with two models of two versions each;
2. the raw models' throughput in this process (`LoadedModel.predict`, batch 1 and 256);
3. the baseline (benchmarks/baseline_server.py, one uvicorn process) per model, every scenario;
   Ray is not running yet, so the baseline has the machine to itself;
4. our stack: a Ray cluster of its own, the app of `deployments.app:build_app` per model with
   serve_config.yaml's deployments config, the canary split 90/10 between v1 and v2, drift
   monitor recording, batching; the same scenarios, plus 256 rows as a binary body (Open
   Inference Protocol binary tensor extension, and .npy); the idle memory by component; the
   step-load autoscaling scenario (expensive model) and the idle workers it leaves; with
   `--profile`, py-spy profiles and a per-stage breakdown of c=1 requests (Server-Timing);
5. Ray Serve's floor on the same cluster: an echo app and an ingress -> handle -> echo chain
   (the JSON scenarios; the bare floor's idle memory with the echo app deployed);
6. markdown tables to stdout and to benchmarks/results/<timestamp>.md (+ .json).

wrk runs every load at `nice -n 19`; a scenario is a warm-up run (discarded) then a measured
run of a fixed duration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import stack
from configs import PROJECT_ROOT

RESULTS = Path(__file__).with_name("results")


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    rows: int
    connections: int
    # json: POST /predict {"features": ...}; binary: POST /v2/models/<name>/infer with the
    # Open Inference Protocol's binary tensor extension; npy: POST /predict, application/x-npy.
    body: str = "json"

    @property
    def bodies(self) -> str:
        """Key of this scenario's body file."""
        return f"{self.body}{self.rows}"

    def url(self, base: str, model_name: str) -> str:
        if self.body == "binary":
            return f"{base}/v2/models/{model_name}/infer"
        return f"{base}/predict"


def scenarios(batch_connections: int) -> list[Scenario]:
    # c=64 last: it is the one that makes Serve add replicas.
    c = batch_connections
    return [
        Scenario("c1", "1 row, c=1", 1, 1),
        Scenario("c16", "1 row, c=16", 1, 16),
        Scenario("b256", f"256 rows, c={c}", 256, c),
        Scenario("b256bin", f"256 rows, binary, c={c}", 256, c, "binary"),
        Scenario("b256npy", f"256 rows, .npy, c={c}", 256, c, "npy"),
        Scenario("c64", "1 row, c=64", 1, 64),
    ]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark our Ray Serve stack against a FastAPI + uvicorn baseline.",
    )
    p.add_argument("--quick", action="store_true", help="short runs (5 s, 1 s warm-up)")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 15)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per scenario (default 3)")
    p.add_argument("--models", default="cheap,expensive", help="comma list of: cheap, expensive")
    p.add_argument(
        "--serve-env",
        choices=["optimized", "default"],
        default="optimized",
        help="optimized: RAY_SERVE_THROUGHPUT_OPTIMIZED=1 and RAY_SERVE_ENABLE_HA_PROXY=1 for "
        "the cluster (default); default: neither (Serve's Python HTTP proxy)",
    )
    p.add_argument(
        "--baseline-endpoint",
        choices=["async", "sync"],
        default="async",
        help="baseline route: async def (model on the event loop; the faster one here) or "
        "def (FastAPI's thread pool)",
    )
    p.add_argument("--batch-connections", type=int, default=4, help="concurrency of 256-row runs")
    p.add_argument("--max-batch-size", type=int, help="override args.batching.max_batch_size")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--skip-autoscale", action="store_true")
    p.add_argument("--autoscale-high-s", type=float, help="high phase seconds (default 60)")
    p.add_argument("--autoscale-high-c", type=int, default=64)
    p.add_argument("--autoscale-low-c", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="py-spy Router and ModelServer")
    p.add_argument("--profile-seconds", type=float, default=10)
    p.add_argument(
        "--disturbed-cores",
        type=float,
        default=0.25,
        help="a measured run during which other processes on the machine used more CPU than "
        "this (in cores) is repeated",
    )
    p.add_argument("--retries", type=int, default=1, help="repeats of a disturbed run")
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the Ray node")
    p.add_argument("--work-dir", default="/tmp/raybench", help="registry, bodies, Ray temp dir")
    p.add_argument(
        "--registry",
        help="SQLite file of an MLflow registry to (re)use: models registered by an earlier run "
        "there are reused, else registered (default: a fresh one in the work dir)",
    )
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--keep-work-dir", action="store_true")
    a = p.parse_args(argv)
    a.duration = a.duration or (5.0 if a.quick else 15.0)
    a.warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 3.0)
    a.autoscale_high_s = a.autoscale_high_s or (30.0 if a.quick else 60.0)
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = set(a.models) - {"cheap", "expensive"}
    if bad:
        p.error(f"unknown models {sorted(bad)}")
    return a


# ---- baseline --------------------------------------------------------------------------------
class Baseline:
    """The baseline server as a subprocess on a free port; stopped by its PID."""

    def __init__(self, tracking_uri: str, model: str, version: str, endpoint: str, logf: Path):
        self.port = stack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = logf.open("w")
        cmd = [sys.executable, "-m", "benchmarks.baseline_server", "--tracking-uri", tracking_uri]
        cmd += ["--model", model, "--version", version, "--port", str(self.port)]
        cmd += ["--endpoint", endpoint]
        self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=self._log, stderr=self._log)

    def wait_ready(self, timeout: float = 120) -> None:
        import httpx

        def ok():
            if self.proc.poll() is not None:
                raise RuntimeError(f"baseline server exited ({self.proc.returncode})")
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200

        stack.wait_until(ok, timeout, "baseline /health")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# ---- runs ------------------------------------------------------------------------------------
def run_scenario(
    url: str,
    sc: Scenario,
    bodies: dict[int, Path],
    a,
    own_pids,
    sampler_deps=(),
    metrics_url: str | None = None,
    blue_version: str | None = None,
) -> dict:
    """Warm-up, then the measured run; also the replica counts (ours) and the CPU that other
    processes on the machine used meanwhile (``own_pids``, a set or a function returning one:
    the system under test, not counted). A run during which other processes used more than
    ``a.disturbed_cores`` is repeated (up to ``a.retries`` times); the least disturbed counts."""
    from benchmarks.loadgen import run_wrk

    if a.warmup > 0:
        run_wrk(url, bodies[sc.bodies], sc.connections, a.warmup)
    best = None
    for attempt in range(1 + a.retries):
        sampler = (
            stack.ReplicaSampler(sampler_deps, interval_s=2.0).start() if sampler_deps else None
        )
        batches0 = stack.batch_count(metrics_url, "blue") if metrics_url else None
        before = stack.cpu_ticks()
        res = run_wrk(url, bodies[sc.bodies], sc.connections, a.duration)
        after = stack.cpu_ticks()
        out = res.to_dict()
        out["rows_per_s"] = res.rps * sc.rows
        ours = own_pids() if callable(own_pids) else own_pids
        out["other_cpu_cores"] = stack.other_cpu_s(before, after, ours) / res.duration_s
        out["attempts"] = attempt + 1
        if sampler is not None:
            samples = sampler.stop()
            for d in sampler_deps:
                vals = [s[d] for s in samples if d in s]
                out[f"replicas_{d}"] = [min(vals), max(vals)] if vals else None
        time.sleep(1)
        if batches0 is not None:
            # Replicas push metrics every few seconds: let the last ones of this run arrive.
            time.sleep(2)
            batches = (stack.batch_count(metrics_url, "blue") or 0.0) - batches0
            served = res.versions.get(blue_version or "", 0)
            out["batching_blue"] = (
                {"batches": batches, "mean_batch": served / batches} if batches > 0 else None
            )
        if best is None or out["other_cpu_cores"] < best["other_cpu_cores"]:
            best = out
        if out["other_cpu_cores"] <= a.disturbed_cores:
            break
        log(f"  other processes used {out['other_cpu_cores']:.2f} cores: run again")
    best["attempts"] = attempt + 1
    return best


def autoscale(cluster, bodies: Path, a) -> dict[str, Any]:
    """Step load on the app (blue serves 90%): low, high, low until blue is back at its
    minimum; replicas sampled every second."""
    from benchmarks.loadgen import WrkResult, run_wrk

    conf = stack.deployment_options()["blue"]["autoscaling_config"]
    min_r = conf["min_replicas"]
    log(f"autoscale: waiting for blue at {min_r} replica(s)")
    stack.wait_until(
        lambda: stack.replica_states("blue") == {"RUNNING": min_r}, 240, "blue at min replicas"
    )
    sampler = stack.ReplicaSampler(("blue", "green"), interval_s=1.0).start()
    url = f"{cluster.http}/predict"
    phases: list[dict[str, Any]] = []

    def phase(name: str, conns: int, seconds: float) -> WrkResult:
        t0 = sampler.now()
        r = run_wrk(url, bodies, conns, seconds)
        phases.append(
            {"phase": name, "c": conns, "start_s": t0, "end_s": sampler.now(), **r.to_dict()}
        )
        return r

    low_s = 10.0 if a.quick else 15.0
    phase("low", a.autoscale_low_c, low_s)
    phase("high", a.autoscale_high_c, a.autoscale_high_s)
    # Low again, in 10 s pieces, until blue is back at its minimum (or 150 s).
    t_low2 = sampler.now()
    parts = []
    while True:
        parts.append(run_wrk(url, bodies, a.autoscale_low_c, 10))
        states = stack.replica_states("blue")
        if states == {"RUNNING": min_r} or sampler.now() - t_low2 > 150:
            break
    low2 = WrkResult.combine(parts)
    phases.append(
        {
            "phase": "low again",
            "c": a.autoscale_low_c,
            "start_s": t_low2,
            "end_s": sampler.now(),
            **low2.to_dict(),
        }
    )
    time.sleep(1)
    samples = sampler.stop()
    high, last = phases[1], phases[2]
    blue = [(s["t"], s.get("blue", 0)) for s in samples if "blue" in s]
    peak = max((n for _, n in blue), default=0)
    t_up = next((t for t, n in blue if t >= high["start_s"] and n > min_r), None)
    t_peak = next((t for t, n in blue if t >= high["start_s"] and n == peak), None)
    # Down: after the load dropped and after the peak was reached (replicas asked for during
    # the high phase may still be starting when it ends).
    after = max(last["start_s"], t_peak or 0.0)
    t_down = next((t for t, n in blue if t >= after and n == min_r and peak > min_r), None)
    # ... and when the stopped replicas were gone (any state), not just no longer RUNNING.
    blue_all = [(s["t"], s.get("blue_all", 0)) for s in samples if "blue_all" in s]
    t_down_all = next((t for t, n in blue_all if t >= after and n == min_r and peak > min_r), None)
    return {
        "autoscaling_config": conf,
        "phases": phases,
        "samples": samples,
        "min": min_r,
        "peak": peak,
        "up_first_s": None if t_up is None else t_up - high["start_s"],
        "up_peak_s": None if t_peak is None else t_peak - high["start_s"],
        "down_s": None if t_down is None else t_down - last["start_s"],
        "down_all_s": None if t_down_all is None else t_down_all - last["start_s"],
        "errors": sum(p["errors"] for p in phases),
    }


def profile_stack(
    cluster, url: str, bodies: Path, a, out_dir: Path, tag: str, connections: int = 16
) -> dict:
    from benchmarks import profile
    from benchmarks.loadgen import finish_wrk, start_wrk

    targets = {}
    for label, dep in (("Router", "Router"), ("ModelServer-blue", "blue")):
        pids = stack.replica_pids(cluster.sid, dep)
        if pids:
            targets[label] = pids[0]
    # Without HAProxy, Serve's Python HTTP proxy is on the request path too.
    if not cluster.optimized:
        proxy = [p for p in stack.session_pids(cluster.sid) if "ProxyActor" in stack.proc_name(p)]
        if proxy:
            targets["ProxyActor"] = proxy[0]
    wrk = start_wrk(url, bodies, connections, a.profile_seconds + 4)
    time.sleep(2)
    files, cpu = profile.record(targets, a.profile_seconds, out_dir / f"pyspy-{tag}")
    load = finish_wrk(wrk)
    return {
        "load": load.to_dict(),
        "files": {k: str(v) for k, v in files.items()},
        "summary": {k: profile.summarize(v, cpu[k]) for k, v in files.items()},
    }


def probe(url: str, records: Path) -> dict[str, Any] | None:
    """One request of a binary-body scenario before its runs: None when the server takes it;
    for a 4xx answer (a build without that input form), the status and the answer's start."""
    import httpx

    from benchmarks.loadgen import read_records

    headers, body = read_records(records)[0]
    r = httpx.post(url, content=body, headers=headers, timeout=30)
    if 400 <= r.status_code < 500:
        return {"unsupported": r.status_code, "detail": r.text[:300]}
    return None


def measure_floor(cluster, kind: str, scs: list[Scenario], bodies, a, own, out) -> dict:
    """Ray Serve's floor app ``kind`` (benchmarks/floor.py) on our cluster: the JSON scenarios;
    for ``echo`` first the bare floor's idle memory (10 s after it answered); with
    ``--profile`` the client's total at c=1 as `timing.run` measures ours."""
    from benchmarks import timing

    log(f"floor {kind}: deploying")
    res: dict[str, Any] = {"deploy_s": stack.deploy_floor(cluster, kind)}
    if kind == "echo":
        time.sleep(10)
        out["memory_floor"] = stack.memory_by_component(stack.cluster_pids(cluster))
    for sc in scs:
        if sc.body != "json":
            continue
        log(f"floor {kind}: {sc.label}")
        res[sc.key] = run_scenario(
            f"{cluster.http}/predict",
            sc,
            bodies,
            a,
            lambda: own | set(stack.cluster_pids(cluster)),
        )
        if sc.key == "c1" and a.profile:
            log(f"floor {kind}: sequential requests (client total)")
            res["timing"] = timing.run(f"{cluster.http}/predict", bodies["json1"], timing=False)
    log(f"floor {kind}: deleting the app")
    stack.delete_floor()
    return res


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--",
                "deployments",
                "monitoring",
                "training",
                "configs",
                "serve_config.yaml",
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
    except Exception:
        return "?"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    ts = time.strftime("%Y%m%d-%H%M%S")
    work = Path(a.work_dir) / ts
    work.mkdir(parents=True, exist_ok=True)
    results_dir = Path(a.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    db = Path(a.registry).resolve() if a.registry else work / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{db}"
    # Before anything imports ray: the cluster's env (auth, admin token, Serve options).
    env = stack.prepare(str(work / "r"), tracking_uri, optimized=a.serve_env == "optimized")

    import warnings

    from benchmarks import models as bm
    from benchmarks import timing
    from benchmarks.loadgen import write_binary_bodies, write_bodies, wrk_binary
    from benchmarks.report import render

    wrk_binary()  # fail early when wrk is missing
    t_start = time.monotonic()
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta = {
        "command": "python -m benchmarks "
        + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:])),
        "started_at": started_at,
        "commit": git_commit(),
        "machine": f"{os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB, "
        f"{platform.platform()}",
        "python": platform.python_version(),
        "duration_s": a.duration,
        "warmup_s": a.warmup,
        "serve_env": {k: v for k, v in env.items() if k.startswith("RAY_SERVE")},
        "baseline_endpoint": a.baseline_endpoint,
        "num_cpus": a.num_cpus,
        "work_dir": str(work),
        "loadavg_start": stack.loadavg(),
        "cpu_count": os.cpu_count(),
    }
    batching = {}
    if a.max_batch_size is not None:
        batching["max_batch_size"] = a.max_batch_size
    meta["batching_override"] = batching
    served = stack.app_args("bench", "sqlite://", batching=batching)
    meta["app_args"] = {
        "batching": served.batching.model_dump(),
        "coalescing": served.coalescing.model_dump(),
    }
    out: dict[str, Any] = {"meta": meta, "raw": {}, "baseline": {}, "ours": {}, "floor": {}}
    cluster = None
    own = {os.getpid()}
    try:
        regs = bm.existing_models(tracking_uri) if a.registry and db.exists() else None
        if regs is None:
            log(f"registering models in {tracking_uri}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                regs = bm.register_models(tracking_uri)
        else:
            log(f"reusing the models registered in {tracking_uri}")
        out["models"] = {k: vars(r) for k, r in regs.items() if k in a.models}
        X = bm.dataset()[0].to_numpy()
        bodies = {
            "json1": write_bodies(work / "rows1.jsonl", X, 1, 500, seed=1),
            "json256": write_bodies(work / "rows256.jsonl", X, 256, 16, seed=2),
            # The same 256-row draws as binary bodies.
            "binary256": write_binary_bodies(work / "rows256-oip.rec", X, 256, 16, 2, "binary"),
            "npy256": write_binary_bodies(work / "rows256-npy.rec", X, 256, 16, 2, "npy"),
        }
        scs = scenarios(a.batch_connections)
        meta["scenarios"] = [vars(s) for s in scs]
        from benchmarks import floor as floor_app

        meta["floor_options"] = floor_app.options_summary(stack.deployment_options())

        log("raw model throughput (in-process)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's feature-names warning, every call
            for kind in a.models:
                r = regs[kind]
                out["raw"][kind] = {
                    str(n): bm.raw_throughput(tracking_uri, r.name, r.versions[0], n, 3.0)
                    for n in (1, 256)
                }

        if not a.skip_baseline:
            for kind in a.models:
                r = regs[kind]
                log(f"baseline {kind}: starting")
                base = Baseline(
                    tracking_uri,
                    r.name,
                    r.versions[0],
                    a.baseline_endpoint,
                    work / f"baseline-{kind}.log",
                )
                try:
                    base.wait_ready()
                    time.sleep(2)
                    rss, pss = stack.memory_kb(base.proc.pid)
                    res: dict[str, Any] = {"memory": {"rss_mb": rss / 1024, "pss_mb": pss / 1024}}
                    for sc in scs:
                        if sc.body != "json":  # the baseline takes JSON only
                            continue
                        log(f"baseline {kind}: {sc.label}")
                        res[sc.key] = run_scenario(
                            f"{base.url}/predict", sc, bodies, a, own | {base.proc.pid}
                        )
                    out["baseline"][kind] = res
                finally:
                    base.stop()

        log(f"our stack: starting Ray ({a.serve_env})")
        t0 = time.monotonic()
        cluster = stack.start_cluster(str(work / "r"), env, num_cpus=a.num_cpus)
        meta["ray_start_s"] = time.monotonic() - t0
        import ray

        meta["ray_version"] = ray.__version__
        murl = stack.metrics_url()
        for i, kind in enumerate(a.models):
            r = regs[kind]
            log(f"ours {kind}: deploying")
            res = {"deploy_s": stack.deploy(cluster, r.name, tracking_uri, batching=batching)}
            res["canary"] = stack.canary_split(cluster, r.versions[0], r.versions[1], 0.1)
            if i == 0:
                time.sleep(10)
                out["memory_idle"] = stack.memory_by_component(stack.cluster_pids(cluster))
                rss, pss = stack.memory_kb(os.getpid())
                out["memory_idle"]["driver"] = {"rss_mb": rss / 1024, "pss_mb": pss / 1024}
            for sc in scs:
                url = sc.url(cluster.http, r.name)
                if sc.body == "npy":
                    # A build without .npy on /predict answers it 4xx: say so, do not count it.
                    why = probe(url, bodies[sc.bodies])
                    if why is not None:
                        log(f"ours {kind}: {sc.label}: not supported ({why['unsupported']})")
                        res[sc.key] = why
                        continue
                log(f"ours {kind}: {sc.label}")
                res[sc.key] = run_scenario(
                    url,
                    sc,
                    bodies,
                    a,
                    lambda: own | set(stack.cluster_pids(cluster)),
                    sampler_deps=("blue", "green"),
                    metrics_url=murl,
                    blue_version=res["canary"]["slots"].get("blue"),
                )
                if sc.key == "c1" and a.profile:
                    log(f"ours {kind}: sequential requests with Server-Timing")
                    res["timing"] = timing.run(f"{cluster.http}/predict", bodies["json1"])
            if kind == "expensive" and not a.skip_autoscale:
                log("ours expensive: autoscaling step load")
                before = stack.idle_workers(cluster)
                res["autoscale"] = autoscale(cluster, bodies["json1"], a)
                after = stack.idle_workers(cluster)
                log("ours expensive: idle workers 60 s after the step load")
                time.sleep(60)
                res["autoscale"]["idle_workers"] = {
                    "before": before,
                    "right after": after,
                    "60 s after": stack.idle_workers(cluster),
                }
            if a.profile:
                res["profiles"] = {}
                for rows, conns in ((1, 16), (256, a.batch_connections)):
                    label = f"{rows} row{'s' if rows > 1 else ''}, c={conns}"
                    log(f"ours {kind}: py-spy under {label}")
                    try:
                        res["profiles"][label] = profile_stack(
                            cluster,
                            f"{cluster.http}/predict",
                            bodies[f"json{rows}"],
                            a,
                            results_dir / ts,
                            f"{kind}-{rows}",
                            connections=conns,
                        )
                    except Exception as exc:
                        res["profiles"][label] = {"error": repr(exc)}
                        log(f"profile failed: {exc!r}")
            out["ours"][kind] = res
            stack.end_canary(cluster)
            log(f"ours {kind}: deleting the app")
            stack.delete_app()
        for kind in floor_app.KINDS:
            try:
                out["floor"][kind] = measure_floor(cluster, kind, scs, bodies, a, own, out)
            except Exception as exc:  # ours is measured: report it without this floor
                log(f"floor {kind} failed: {exc!r}")
                out["floor"][kind] = {"error": repr(exc)}
                with contextlib.suppress(Exception):
                    stack.delete_floor()
    finally:
        if cluster is not None:
            log("stopping our Ray cluster")
            cluster.stop()
    meta["total_s"] = time.monotonic() - t_start
    # The raw numbers first: a report that fails to render leaves them behind.
    (results_dir / f"{ts}.json").write_text(json.dumps(out, indent=1, default=str))
    md = render(out)
    md_path = results_dir / f"{ts}.md"
    md_path.write_text(md)
    print(md)
    log(f"wrote {md_path} (and .json) in {meta['total_s'] / 60:.1f} min")
    if not a.keep_work_dir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0
