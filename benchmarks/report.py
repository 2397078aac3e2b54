"""Markdown tables of one benchmark run (the dict `benchmarks.run.main` builds)."""

from __future__ import annotations

from typing import Any

CAVEAT = (
    "One run on a 2-core machine shared by everything it measures (load generator, servers, "
    "Ray's own processes); runs vary by 10-30% from one to the next."
)


def _app_args(meta: dict[str, Any]) -> str:
    args = meta.get("app_args")
    if not args:
        return "batching and coalescing as configured"
    b, c = args["batching"], args["coalescing"]
    text = (
        f"serve.batch {b['max_batch_size']}, waiting up to "
        f"{b['batch_wait_timeout_s'] * 1000:g} ms while other calls are in flight; "
    )
    if c["enabled"]:
        return text + f"router coalescing, {c['calls_per_replica']} calls in flight per replica"
    return text + "router coalescing off"


def _f(x: float | None, nd: int = 1) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{nd}f}"


def _lat(r: dict | None) -> str:
    if not r:
        return "n/a"
    return f"{_f(r['p50_ms'])} / {_f(r['p95_ms'])} / {_f(r['p99_ms'])}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def _errors(r: dict | None) -> str:
    if not r:
        return "n/a"
    e = r["errors"]
    if not e:
        return "0"
    parts = [f"{k}:{v}" for k, v in sorted(r.get("status_counts", {}).items())]
    parts += [f"{k}:{r[k]}" for k in ("connect", "read", "write", "timeout") if r.get(k)]
    return f"**{e}** ({', '.join(parts)})"


def _versions(r: dict) -> str:
    v = r.get("versions") or {}
    total = sum(v.values())
    if not total:
        return "n/a"
    return ", ".join(f"v{k} {n / total:.0%}" for k, n in sorted(v.items()))


def _replicas(r: dict, dep: str) -> str:
    x = r.get(f"replicas_{dep}")
    if not x:
        return "n/a"
    return str(x[0]) if x[0] == x[1] else f"{x[0]}-{x[1]}"


def _batch(r: dict | None) -> str:
    b = (r or {}).get("batching_blue")
    if not b:
        return "n/a"
    return f"~{b['mean_batch']:.1f}"


def _cores(r: dict | None) -> str:
    return "n/a" if not r or r.get("other_cpu_cores") is None else f"{r['other_cpu_cores']:.2f}"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def targets(out: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    base, ours, raw = out["baseline"], out["ours"], out["raw"]
    rows: list[tuple[str, str, bool | None]] = []

    def get(side, kind, key):
        return (side.get(kind) or {}).get(key)

    b, o = get(base, "expensive", "c16"), get(ours, "expensive", "c16")
    if o:
        ok = bool(b) and o["rps"] >= 3 * b["rps"] and o["p99_ms"] is not None
        ok = ok and o["p99_ms"] < 100
        rows.append(
            (
                "expensive, 1 row, c=16: >= 3x baseline req/s and p99 < 100 ms",
                f"{_f(o['rps'])} vs {_f(b['rps']) if b else 'n/a'} req/s "
                f"({_ratio(o['rps'], b['rps'] if b else None)}), p99 {_f(o['p99_ms'])} ms",
                ok if b else None,
            )
        )
    b, o = get(base, "cheap", "c16"), get(ours, "cheap", "c16")
    if o:
        rows.append(
            (
                "cheap, 1 row, c=16: >= baseline req/s",
                f"{_f(o['rps'])} vs {_f(b['rps']) if b else 'n/a'} req/s "
                f"({_ratio(o['rps'], b['rps'] if b else None)})",
                (o["rps"] >= b["rps"]) if b else None,
            )
        )
    for kind in ("cheap", "expensive"):
        b, o = get(base, kind, "c1"), get(ours, kind, "c1")
        if o:
            ok, diff = None, ""
            if b and o["p50_ms"] is not None and b["p50_ms"] is not None:
                ok = o["p50_ms"] <= b["p50_ms"] + 3
                diff = f" (+{o['p50_ms'] - b['p50_ms']:.1f} ms)"
            rows.append(
                (
                    f"{kind}, 1 row, c=1: p50 within 3 ms of the baseline's",
                    f"{_f(o['p50_ms'], 2)} vs {_f(b['p50_ms'], 2) if b else 'n/a'} ms{diff}",
                    ok,
                )
            )
    for kind in ("cheap", "expensive"):
        o = get(ours, kind, "b256")
        r = (raw.get(kind) or {}).get("256")
        if o and r:
            rows.append(
                (
                    f"{kind}, 256 rows: rows/s >= 80% of the raw model's at 256 rows",
                    f"{_f(o['rows_per_s'], 0)} vs raw {_f(r['rows_per_s'], 0)} rows/s "
                    f"({o['rows_per_s'] / r['rows_per_s']:.0%})",
                    o["rows_per_s"] >= 0.8 * r["rows_per_s"],
                )
            )
    errs, runs = 0, 0
    for res in ours.values():
        for r in res.values():
            if isinstance(r, dict) and "errors" in r and "requests" in r:
                errs += r["errors"]
                runs += 1
        if "autoscale" in res:
            errs += res["autoscale"]["errors"]
            runs += len(res["autoscale"]["phases"])
    if runs:
        rows.append(
            (
                "zero errors everywhere (ours, incl. autoscaling)",
                f"{errs} errors in {runs} runs",
                errs == 0,
            )
        )
    return rows


def render(out: dict[str, Any]) -> str:
    meta = out["meta"]
    L: list[str] = []
    L.append(f"# Benchmark: our stack vs FastAPI + uvicorn ({meta['started_at']})")
    L.append("")
    L.append(f"> {CAVEAT}")
    L.append("")
    L.append(f"- command: `{meta['command']}`")
    L.append(
        f"- commit: {meta['commit']}; Ray {meta.get('ray_version', '?')}, "
        f"Python {meta['python']}; machine: {meta['machine']}"
    )
    L.append(
        f"- each scenario: {meta['warmup_s']:g} s warm-up (discarded), then "
        f"{meta['duration_s']:g} s measured; wrk 1 thread at `nice -n 19`; every non-2xx "
        "and every connect/read/write/timeout error (5 s) counts as an error"
    )
    senv = meta["serve_env"]
    opt = senv.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"
    L.append(
        "- our stack: own Ray cluster (`ray start --head`, token auth, "
        f"{meta['num_cpus']} logical CPUs), "
        + (
            "`RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_ENABLE_HA_PROXY=1` (HAProxy in front)"
            if opt
            else "Serve's default settings (Python HTTP proxy)"
        )
        + "; app `build_app(AppArgs(...))` with serve_config.yaml's deployments "
        f"(autoscaling 1-3 per slot) and args ({_app_args(meta)}); canary 90/10 v1/v2; "
        "drift monitor recording every request"
    )
    if meta.get("batching_override"):
        L.append(
            "- **experiment: serve_config.yaml's args.batching overridden with "
            + ", ".join(f"{k}={v}" for k, v in meta["batching_override"].items())
            + "**"
        )
    L.append(
        f"- baseline: one uvicorn process, FastAPI `{meta['baseline_endpoint']}` route, "
        "same registered v1, access log off; run before Ray started (machine to itself)"
    )
    if meta.get("total_s"):
        L.append(f"- total run time: {meta['total_s'] / 60:.1f} min")
    others = {}
    for side in ("baseline", "ours"):
        vals = [
            r["other_cpu_cores"]
            for res in out[side].values()
            for r in res.values()
            if isinstance(r, dict) and "other_cpu_cores" in r
        ]
        if vals:
            others[side] = max(vals)
    if others:
        L.append(
            f"- other work on the machine: load average {_f(meta.get('loadavg_start'), 2)} at the "
            "start; CPU used by processes outside the system under test and wrk during a "
            "measured run, at most: "
            + ", ".join(f"{k} {v:.2f} cores" for k, v in others.items())
            + f" (of {meta.get('cpu_count', '?')}); per run in the 'other CPU' column"
        )
    L.append("")

    L.append("## Targets")
    L.append("")
    L.append("| target | measured | |")
    L.append("|---|---|---|")
    for name, measured, ok in targets(out):
        L.append(f"| {name} | {measured} | {_met(ok)} |")
    L.append("")

    L.append("## Throughput and latency")
    L.append("")
    L.append(
        "req/s counts 2xx answers; latency p50 / p95 / p99 in ms (wrk); ratio = ours / baseline. "
        "Requests per blue batch: requests answered by blue's version / `serve.batch` calls "
        "of blue (Serve's `serve_actual_batch_size` count; approximate, replicas report every "
        "few seconds). Other CPU: cores used by other processes on the machine during the run."
    )
    L.append("")
    L.append(
        "| model | scenario | baseline req/s | ours req/s | ratio | baseline rows/s | "
        "ours rows/s | baseline p50/p95/p99 | ours p50/p95/p99 | errors baseline | "
        "errors ours | ours: versions answered | blue / green replicas | "
        "ours: requests per blue batch | other CPU base / ours |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    labels = {s["key"]: s["label"] for s in meta.get("scenarios", [])}
    for kind in out.get("models", {}):
        for key, label in labels.items():
            b = (out["baseline"].get(kind) or {}).get(key)
            o = (out["ours"].get(kind) or {}).get(key)
            L.append(
                f"| {kind} | {label} | {_f(b['rps']) if b else 'n/a'} | "
                f"{_f(o['rps']) if o else 'n/a'} | "
                f"{_ratio(o['rps'] if o else None, b['rps'] if b else None)} | "
                f"{_f(b['rows_per_s'], 0) if b else 'n/a'} | "
                f"{_f(o['rows_per_s'], 0) if o else 'n/a'} | {_lat(b)} | {_lat(o)} | "
                f"{_errors(b)} | {_errors(o)} | {_versions(o) if o else 'n/a'} | "
                f"{(_replicas(o, 'blue') + ' / ' + _replicas(o, 'green')) if o else 'n/a'} | "
                f"{_batch(o)} | {_cores(b)} / {_cores(o)} |"
            )
    L.append("")

    L.append("## Raw model throughput (in-process, one thread)")
    L.append("")
    L.append(
        "Predictions and probabilities as a ModelServer replica and the baseline compute them "
        "(`LoadedModel.predict`: one predict_proba pass for these model families)."
    )
    L.append("")
    L.append("| model | family | rows per call | calls/s | rows/s | p50 ms per call |")
    L.append("|---|---|---|---|---|---|")
    for kind, per in out["raw"].items():
        fam = out["models"][kind]["family"]
        for n, r in per.items():
            L.append(
                f"| {kind} | {fam} | {n} | {_f(r['calls_per_s'])} | {_f(r['rows_per_s'], 0)} | "
                f"{_f(r['p50_ms'], 2)} |"
            )
    L.append("")

    auto = (out["ours"].get("expensive") or {}).get("autoscale")
    if auto:
        c = auto["autoscaling_config"]
        L.append("## Autoscaling (expensive model, step load; blue serves 90%)")
        L.append("")
        L.append(
            "serve_config.yaml's autoscaling_config for blue: "
            + ", ".join(f"{k} {v}" for k, v in c.items())
            + ". Replicas of blue sampled every second (`serve.status()`, RUNNING)."
        )
        L.append("")
        L.append(
            f"- blue replicas: {auto['min']} -> peak {auto['peak']} -> "
            f"{auto['min'] if auto['down_s'] is not None else '?'}"
        )
        L.append(
            f"- scale up: first new replica RUNNING {_f(auto['up_first_s'])} s after the high "
            f"load started, peak reached after {_f(auto['up_peak_s'])} s"
        )
        L.append(
            f"- scale down: back to {auto['min']} RUNNING {_f(auto['down_s'])} s after the load "
            f"dropped (stopped replicas gone after {_f(auto['down_all_s'])} s)"
        )
        L.append(f"- errors during the scenario: {auto['errors']}")
        L.append("")
        L.append("| phase | c | start s | length s | req/s | p50/p95/p99 ms | errors |")
        L.append("|---|---|---|---|---|---|---|")
        for p in auto["phases"]:
            L.append(
                f"| {p['phase']} | {p['c']} | {_f(p['start_s'])} | "
                f"{_f(p['end_s'] - p['start_s'])} | {_f(p['rps'])} | {_lat(p)} | "
                f"{_errors(p)} |"
            )
        L.append("")
        changes, last = [], None
        for s in auto["samples"]:
            cur = (s.get("blue"), s.get("blue_all"), s.get("green"))
            if cur != last:
                changes.append(
                    f"{s['t']:.0f}s: blue {s.get('blue')} running ({s.get('blue_all')} total), "
                    f"green {s.get('green')}"
                )
                last = cur
        L.append("Replica changes: " + "; ".join(changes))
        L.append("")

    mem = out.get("memory_idle")
    if mem:
        L.append("## Memory when idle")
        L.append("")
        drv = mem.get("driver") or {"rss_mb": 0.0, "pss_mb": 0.0}
        L.append(
            "Our local stack (every process of its Ray session: GCS, raylet, dashboard, agents, "
            "Serve controller, proxies, replicas), one app deployed with both slots loaded, "
            f"idle: **{_f(mem['rss_mb'], 0)} MB RSS** (sum over {mem['processes']} processes; "
            f"{_f(mem['pss_mb'], 0)} MB PSS, which counts shared pages once). With the driver "
            f"(this harness, which also holds the models and MLflow): "
            f"{_f(mem['rss_mb'] + drv['rss_mb'], 0)} MB RSS, "
            f"{_f(mem['pss_mb'] + drv['pss_mb'], 0)} MB PSS."
        )
        bm = [(k, v["memory"]) for k, v in out["baseline"].items() if "memory" in v]
        if bm:
            L.append(
                "Baseline (one uvicorn process, model loaded): "
                + ", ".join(f"{k} {_f(m['rss_mb'], 0)} MB RSS" for k, m in bm)
                + "."
            )
        L.append("")
        L.append("| process | RSS MB | PSS MB |")
        L.append("|---|---|---|")
        for r in mem["by_process"]:
            L.append(f"| {r['name']} | {_f(r['rss_mb'], 0)} | {_f(r['pss_mb'], 0)} |")
        L.append("")

    profs = {
        (kind, label): p
        for kind, v in out["ours"].items()
        for label, p in (v.get("profiles") or {}).items()
    }
    if profs:
        L.append("## Profiles (py-spy; not part of the measured runs)")
        L.append("")
        for (kind, label), p in profs.items():
            if "error" in p:
                L.append(f"- {kind}, {label}: profile failed: {p['error']}")
                continue
            L.append(
                f"### {kind}, {label} (load during profiling: {_f(p['load']['rps'])} req/s, "
                f"errors {p['load']['errors']})"
            )
            L.append("")
            for proc, s in p["summary"].items():
                L.append(
                    f"**{proc}**: {_f(s.get('cpu_cores'), 2)} cores of CPU; {s['samples']} "
                    f"samples of busy threads ({s.get('samples_idle_threads', 0)} of idle ones "
                    f"left out); raw stacks: `{p['files'][proc]}`"
                )
                L.append("")
                if s.get("threads"):
                    L.append(
                        "CPU by thread (/proc): "
                        + "; ".join(
                            f"{name} {v:.2f} cores" for name, v in s["threads"] if v >= 0.005
                        )
                    )
                    L.append("")
                L.append("| self % | function | | inclusive % | function |")
                L.append("|---|---|---|---|---|")
                for (f1, s1), (f2, s2) in zip(s["self"][:12], s["inclusive"][:12], strict=False):
                    L.append(f"| {s1:.1%} | `{f1}` | | {s2:.1%} | `{f2}` |")
                L.append("")
                if s.get("categories"):
                    L.append(
                        "Share of samples by what is on the stack: "
                        + "; ".join(f"{lbl.strip()} {v:.0%}" for lbl, v in s["categories"])
                    )
                    L.append("")
    return "\n".join(L) + "\n"
