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
    text = f"model passes of up to {b['max_batch_size']} calls, each carrying what queued; "
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


def _lat2(r: dict | None) -> str:
    if not r:
        return "n/a"
    return f"{_f(r['p50_ms'])} / {_f(r['p99_ms'])}"


def _opts(o: dict[str, Any] | None) -> str:
    """A floor deployment's options, briefly."""
    if not o:
        return "?"
    parts = [f"{o.get('num_replicas', 1)} replica(s)"]
    cpus = (o.get("ray_actor_options") or {}).get("num_cpus")
    if cpus is not None:
        parts.append(f"{cpus:g} CPU each")
    for k in ("max_ongoing_requests", "max_queued_requests"):
        if k in o:
            parts.append(f"{k} {o[k]}")
    return ", ".join(parts)


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
    return "not measured" if ok is None else ("**met**" if ok else "**missed**")


def _get(side: dict[str, Any], kind: str, key: str) -> dict | None:
    r = (side.get(kind) or {}).get(key)
    return r if isinstance(r, dict) and "rps" in r else None


def _floor(out: dict[str, Any], kind: str, key: str) -> dict | None:
    r = (out.get("floor") or {}).get(kind, {}).get(key)
    return r if isinstance(r, dict) and "rps" in r else None


def _rps(r: dict | None) -> str:
    return f"{_f(r['rps'])} req/s" if r else "not measured"


def _p50(r: dict | None) -> str:
    return f"p50 {_f(r['p50_ms'], 2)} ms" if r and r.get("p50_ms") is not None else "not measured"


def _runs(side: dict[str, Any]) -> tuple[int, int]:
    """(errors, runs) over every measured run of one side (per model or per floor app)."""
    errs = runs = 0
    for res in side.values():
        for r in res.values():
            if isinstance(r, dict) and "errors" in r and "requests" in r:
                errs += r["errors"]
                runs += 1
        if "autoscale" in res:
            errs += res["autoscale"]["errors"]
            runs += len(res["autoscale"]["phases"])
    return errs, runs


def memory_ratio(out: dict[str, Any]) -> dict[str, float] | None:
    ours, floor = out.get("memory_idle"), out.get("memory_floor")
    if not ours or not floor or not floor.get("pss_mb") or not floor.get("rss_mb"):
        return None
    return {"pss": ours["pss_mb"] / floor["pss_mb"], "rss": ours["rss_mb"] / floor["rss_mb"]}


# A target row: (target, ours, baseline, floor, met / missed / None = not measured).
Target = tuple[str, str, str, str, bool | None]


def targets(out: dict[str, Any]) -> list[Target]:
    """Issue #15's targets, each with ours, the baseline and the floor (Ray Serve's, or the
    raw model for rows/s), and whether it was met (None: data missing in this run)."""
    base, ours, raw = out["baseline"], out["ours"], out["raw"]
    rows: list[Target] = []

    o, b, ch = _get(ours, "cheap", "c1"), _get(base, "cheap", "c1"), _floor(out, "chain", "c1")
    ok = None
    if o and ch and o["p50_ms"] is not None and ch["p50_ms"] is not None:
        ok = o["p50_ms"] <= ch["p50_ms"] + 1.0
    diff = f" ({o['p50_ms'] - ch['p50_ms']:+.2f} ms over the chain's)" if ok is not None else ""
    rows.append(
        (
            "cheap, 1 row, c=1: p50 <= the chain floor's p50 + 1.0 ms",
            _p50(o) + diff,
            _p50(b),
            f"chain {_p50(ch)}; echo {_p50(_floor(out, 'echo', 'c1'))}",
            ok,
        )
    )

    o, b, ch = _get(ours, "cheap", "c16"), _get(base, "cheap", "c16"), _floor(out, "chain", "c16")
    ok = (o["rps"] >= ch["rps"] and o["rps"] >= b["rps"]) if o and b and ch else None
    rows.append(
        (
            "cheap, 1 row, c=16: req/s >= the chain floor's and >= the baseline's",
            _rps(o),
            _rps(b) + (f" (ours {_ratio(o['rps'], b['rps'])})" if o and b else ""),
            "chain "
            + _rps(ch)
            + (f" (ours {_ratio(o['rps'], ch['rps'])})" if o and ch else "")
            + f"; echo {_rps(_floor(out, 'echo', 'c16'))}",
            ok,
        )
    )

    o, b = _get(ours, "expensive", "c16"), _get(base, "expensive", "c16")
    ok = None
    if o and b:
        ok = o["rps"] >= 3 * b["rps"] and o["p99_ms"] is not None and o["p99_ms"] < 100
    rows.append(
        (
            "expensive, 1 row, c=16: >= 3x the baseline's req/s and p99 < 100 ms",
            (f"{_rps(o)}, p99 {_f(o['p99_ms'])} ms" if o else "not measured"),
            _rps(b) + (f" (ours {_ratio(o['rps'], b['rps'])})" if o and b else ""),
            f"chain {_rps(_floor(out, 'chain', 'c16'))} (no model)",
            ok,
        )
    )

    for kind in ("cheap", "expensive"):
        o = _get(ours, kind, "b256bin")
        r = (raw.get(kind) or {}).get("256")
        ok = o["rows_per_s"] >= 0.8 * r["rows_per_s"] if o and r else None
        share = f" ({o['rows_per_s'] / r['rows_per_s']:.0%} of raw)" if o and r else ""
        rows.append(
            (
                f"{kind}, 256 rows, binary body: rows/s >= 80% of the raw model's",
                (f"{_f(o['rows_per_s'], 0)} rows/s{share}" if o else "not measured"),
                "n/a (JSON only)",
                f"raw model {_f(r['rows_per_s'], 0)} rows/s" if r else "not measured",
                ok,
            )
        )
    for kind in ("cheap", "expensive"):
        o, b = _get(ours, kind, "b256"), _get(base, kind, "b256")
        r = (raw.get(kind) or {}).get("256")
        ok = o["rows_per_s"] >= b["rows_per_s"] if o and b and r else None

        def frac(x, r=r):
            if not x:
                return "not measured"
            share = f" ({x['rows_per_s'] / r['rows_per_s']:.0%} of raw)" if r else ""
            return f"{_f(x['rows_per_s'], 0)} rows/s{share}"

        rows.append(
            (
                f"{kind}, 256 rows, JSON body: share of the raw model's rows/s >= the baseline's",
                frac(o),
                frac(b),
                f"raw model {_f(r['rows_per_s'], 0)} rows/s" if r else "not measured",
                ok,
            )
        )

    mem, fmem, ratio = out.get("memory_idle"), out.get("memory_floor"), memory_ratio(out)
    bm = [(k, v["memory"]) for k, v in base.items() if "memory" in v]
    rows.append(
        (
            "idle memory: <= 1.3x the bare Ray + Serve floor's (PSS; RSS for reference)",
            (
                f"{_f(mem['pss_mb'], 0)} MB PSS, {_f(mem['rss_mb'], 0)} MB RSS"
                + (f" ({ratio['pss']:.2f}x / {ratio['rss']:.2f}x)" if ratio else "")
                if mem
                else "not measured"
            ),
            ", ".join(f"{k} {_f(m['rss_mb'], 0)} MB RSS" for k, m in bm) or "not measured",
            (
                f"echo app: {_f(fmem['pss_mb'], 0)} MB PSS, {_f(fmem['rss_mb'], 0)} MB RSS"
                if fmem
                else "not measured"
            ),
            ratio["pss"] <= 1.3 if ratio else None,
        )
    )

    sides = {"ours": _runs(ours), "baseline": _runs(base), "floor": _runs(out.get("floor") or {})}
    measured = {k: v for k, v in sides.items() if v[1]}

    def errs(k: str) -> str:
        e, n = sides[k]
        return f"{e} errors in {n} runs" if n else "not measured"

    rows.append(
        (
            "0 errors everywhere (ours incl. autoscaling, and the floors; the baseline's are "
            "shown, not judged: they are not ours to remove)",
            errs("ours"),
            errs("baseline"),
            errs("floor"),
            (
                all(e == 0 for k, (e, _) in measured.items() if k != "baseline")
                if "ours" in measured
                else None
            ),
        )
    )
    return rows


def render(out: dict[str, Any]) -> str:
    meta = out["meta"]
    L: list[str] = []
    L.append(
        f"# Benchmark: our stack vs FastAPI + uvicorn and Ray Serve's floor ({meta['started_at']})"
    )
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
    fo = meta.get("floor_options") or {}
    L.append(
        "- Ray Serve's floor, on the same cluster after our apps were deleted: `echo` (one "
        "deployment, a Starlette `__call__` ingress that reads the body and answers "
        '`{"predictions":[0],"bytes":n}`) and `chain` (the same ingress passing the raw body '
        "through a DeploymentHandle to an echo deployment); ingress with our Router's options "
        f"({_opts(fo.get('ingress'))}), the deployment behind the handle with blue's "
        f"({_opts(fo.get('backend'))}); the JSON scenarios only"
    )
    for kind, res in (out.get("floor") or {}).items():
        if "error" in res:
            L.append(f"- **floor app {kind} failed**: `{res['error'][:300]}`")
    if meta.get("total_s"):
        L.append(f"- total run time: {meta['total_s'] / 60:.1f} min")
    others = {}
    for side in ("baseline", "ours", "floor"):
        vals = [
            r["other_cpu_cores"]
            for res in (out.get(side) or {}).values()
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

    L.append("## Targets (issue #15)")
    L.append("")
    L.append(
        "Floor: Ray Serve's own apps (chain: ingress -> handle -> echo; echo: one deployment); "
        "for rows/s, the raw model in-process. 'not measured': this run lacks the data."
    )
    L.append("")
    L.append("| target | ours | baseline | floor | |")
    L.append("|---|---|---|---|---|")
    for name, o, b, fl, ok in targets(out):
        L.append(f"| {name} | {o} | {b} | {fl} | {_met(ok)} |")
    L.append("")

    L.append("## Throughput and latency")
    L.append("")
    L.append(
        "req/s counts 2xx answers; latency p50 / p99 in ms (wrk); ratios of req/s. The floor "
        "apps are measured once (no model) and shown against both models. Binary bodies: "
        "ours only (`/v2/models/<name>/infer` with the binary tensor extension; `/predict` "
        "with `application/x-npy`)."
    )
    L.append("")
    L.append(
        "| model | scenario | baseline req/s | ours req/s | echo floor req/s | "
        "chain floor req/s | ours / baseline | ours / chain | baseline p50 / p99 | "
        "ours p50 / p99 | echo p50 / p99 | chain p50 / p99 | errors base / ours / echo / chain |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    scen = meta.get("scenarios", [])
    for kind in out.get("models", {}):
        for sc in scen:
            key, json_only = sc["key"], sc.get("body", "json") != "json"
            b, o = _get(out["baseline"], kind, key), _get(out["ours"], kind, key)
            e, c = _floor(out, "echo", key), _floor(out, "chain", key)
            o_raw = (out["ours"].get(kind) or {}).get(key)
            na = "n/a (JSON only)" if json_only else "n/a"
            if o_raw and "unsupported" in o_raw:
                o_cell = f"not supported by this build ({o_raw['unsupported']})"
            else:
                o_cell = _f(o["rps"]) if o else "n/a"
            L.append(
                f"| {kind} | {sc['label']} | {_f(b['rps']) if b else na} | {o_cell} | "
                f"{_f(e['rps']) if e else na} | {_f(c['rps']) if c else na} | "
                f"{_ratio(o and o['rps'], b and b['rps'])} | "
                f"{_ratio(o and o['rps'], c and c['rps'])} | "
                f"{_lat2(b) if b else na} | {_lat2(o)} | {_lat2(e) if e else na} | "
                f"{_lat2(c) if c else na} | {_errors(b)} / {_errors(o)} / {_errors(e)} / "
                f"{_errors(c)} |"
            )
    L.append("")
    L.append(
        "Ours in detail. Requests per blue batch: requests answered by blue's version / "
        "model passes of blue (our `ray_mlops_model_passes_total`; approximate, "
        "replicas report every few seconds). Other CPU: cores used by other processes on the "
        "machine during the run (baseline / ours)."
    )
    L.append("")
    L.append(
        "| model | scenario | baseline rows/s | ours rows/s | ours p50/p95/p99 | "
        "ours: versions answered | blue / green replicas | ours: requests per blue batch | "
        "other CPU base / ours |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|")
    for kind in out.get("models", {}):
        for sc in scen:
            key = sc["key"]
            b, o = _get(out["baseline"], kind, key), _get(out["ours"], kind, key)
            if not o:
                continue
            L.append(
                f"| {kind} | {sc['label']} | {_f(b['rows_per_s'], 0) if b else 'n/a'} | "
                f"{_f(o['rows_per_s'], 0)} | {_lat(o)} | {_versions(o)} | "
                f"{_replicas(o, 'blue')} / {_replicas(o, 'green')} | {_batch(o)} | "
                f"{_cores(b)} / {_cores(o)} |"
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
        iw = auto.get("idle_workers")
        if iw:
            L.append(
                "Idle `ray::IDLE` worker processes of the cluster (pooled workers no actor "
                "holds; issue #15 saw a 447 MB one stay after a scale-down): "
                + "; ".join(
                    f"{when}: {len(ws)} ({_f(sum(w['rss_mb'] for w in ws), 0)} MB RSS"
                    + (f", largest {_f(max(w['rss_mb'] for w in ws), 0)} MB" if ws else "")
                    + ")"
                    for when, ws in iw.items()
                )
                + "."
            )
            L.append("")

    mem, fmem = out.get("memory_idle"), out.get("memory_floor")
    if mem or fmem:
        L.extend(_memory(out, mem, fmem))

    timings = {k: v["timing"] for k, v in out["ours"].items() if "timing" in v}
    if timings:
        L.extend(_timing(out, timings))

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


# Components in the order the memory table shows them (then any others, then "other").
COMPONENT_ORDER = [
    "dashboard + its agents",
    "raylet",
    "GCS",
    "log monitor / autoscaler monitor",
    "Serve controller",
    "HAProxy / Serve proxy",
    "Router",
    "blue",
    "green",
    "RolloutController",
    "DriftMonitor",
    "floor: Echo",
    "Ray client server",
    "idle ray::IDLE workers",
]


def _memory(out: dict[str, Any], mem: dict | None, fmem: dict | None) -> list[str]:
    L = ["## Memory when idle, by component", ""]
    ratio = memory_ratio(out)

    def total(m: dict | None) -> str:
        if not m:
            return "not measured"
        return (
            f"**{_f(m['rss_mb'], 0)} MB RSS, {_f(m['pss_mb'], 0)} MB PSS** "
            f"({m['processes']} processes)"
        )

    L.append(
        "Every process of the cluster (its Ray session and the HAProxy it started), idle, 10 s "
        "after the app answered. RSS counts a shared page in every process mapping it, PSS "
        "shares it among them (the fairer sum). Ours: one app deployed, both slots loaded: "
        + total(mem)
        + ". Bare Ray + Serve floor (our app deleted, only the `echo` floor app deployed): "
        + total(fmem)
        + "."
        + (f" Ours / floor: **{ratio['pss']:.2f}x PSS**, {ratio['rss']:.2f}x RSS." if ratio else "")
    )
    if mem and mem.get("driver"):
        drv = mem["driver"]
        L.append(
            f"The harness (driver, which also holds the models and MLflow) adds "
            f"{_f(drv['rss_mb'], 0)} MB RSS / {_f(drv['pss_mb'], 0)} MB PSS, in neither sum."
        )
    bm = [(k, v["memory"]) for k, v in out["baseline"].items() if "memory" in v]
    if bm:
        L.append(
            "Baseline (one uvicorn process, model loaded): "
            + ", ".join(f"{k} {_f(m['rss_mb'], 0)} MB RSS" for k, m in bm)
            + "."
        )
    L.append("")
    groups = {}
    for side, m in (("ours", mem), ("floor", fmem)):
        for name, g in ((m or {}).get("by_component") or {}).items():
            groups.setdefault(name, {})[side] = g
    order = [c for c in COMPONENT_ORDER if c in groups]
    order += sorted(c for c in groups if c not in order and c != "other")
    order += ["other"] if "other" in groups else []

    def cells(g: dict | None) -> str:
        if not g:
            return "- | - | -"
        return f"{g['processes']} | {_f(g['rss_mb'], 0)} | {_f(g['pss_mb'], 0)}"

    L.append(
        "| component | ours: processes | ours: RSS MB | ours: PSS MB | floor: processes | "
        "floor: RSS MB | floor: PSS MB |"
    )
    L.append("|---|---|---|---|---|---|---|")
    for name in order:
        L.append(
            f"| {name} | {cells(groups[name].get('ours'))} | {cells(groups[name].get('floor'))} |"
        )
    tot = {
        side: {"processes": m["processes"], "rss_mb": m["rss_mb"], "pss_mb": m["pss_mb"]}
        for side, m in (("ours", mem), ("floor", fmem))
        if m
    }
    L.append(f"| **total** | {cells(tot.get('ours'))} | {cells(tot.get('floor'))} |")
    L.append("")
    for side, m in (("ours", mem), ("floor", fmem)):
        other = [r for r in (m or {}).get("by_process", []) if r.get("component") == "other"]
        if other:
            L.append(
                f"'other' ({side}): "
                + ", ".join(f"`{r['name']}` {_f(r['rss_mb'], 0)} MB" for r in other)
            )
            L.append("")
    return L


def _timing(out: dict[str, Any], timings: dict[str, dict]) -> list[str]:
    L = ["## Where c=1 time goes (Server-Timing; `--profile`)", ""]
    n = next(iter(timings.values())).get("sent", "?")
    L.append(
        f"{n} sequential requests after the c=1 run, from the harness (httpx, one keep-alive "
        "connection, the 1-row bodies), each asking for `X-Mlops-Timing: 1`; ms, median and "
        "p90 of each stage the Router's `Server-Timing` header names. client total: measured "
        "by the client; outside the router = client total - router (HAProxy, the Router's HTTP "
        "server, the client); hop = call - replica (the handle's round trip without the "
        "replica's own time). Stages overlap: replica holds batch and model; call holds "
        "replica."
    )
    L.append("")
    kinds = list(timings)
    names: list[str] = []
    for t in timings.values():
        for k in t.get("stages") or {}:
            if k not in names:
                names.append(k)
    L.append("| stage | " + " | ".join(f"{k}: p50 | {k}: p90" for k in kinds) + " |")
    L.append("|---|" + "---|---|" * len(kinds))

    def row(label: str, get) -> str:
        cells = []
        for k in kinds:
            st = get(timings[k])
            cells.append(f"{_f(st['p50_ms'], 3)} | {_f(st['p90_ms'], 3)}" if st else "- | -")
        return f"| {label} | " + " | ".join(cells) + " |"

    for name in names:
        L.append(row(name, lambda t, name=name: (t.get("stages") or {}).get(name)))
    L.append(row("**client total**", lambda t: t.get("client_total")))
    L.append("")
    for k, t in timings.items():
        if not t.get("server_timing"):
            L.append(f"- {k}: no Server-Timing header (older build)")
        if t.get("not_200"):
            L.append(f"- {k}: {t['not_200']} of {t['sent']} requests not answered 200")
    floors = {
        kind: v["timing"]["client_total"]
        for kind, v in (out.get("floor") or {}).items()
        if "client_total" in (v.get("timing") or {})
    }
    if floors:
        L.append(
            "- the same client against Ray Serve's floor apps, client total: "
            + "; ".join(
                f"{kind} p50 {_f(c['p50_ms'], 3)} ms, p90 {_f(c['p90_ms'], 3)} ms"
                for kind, c in floors.items()
            )
        )
    L.append("")
    return L
