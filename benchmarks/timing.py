"""Where one request's time goes at concurrency 1 (`--profile`): sequential requests from this
process (httpx, one keep-alive connection) carrying ``X-Mlops-Timing: 1``, the client's total
per request, and the Router's ``Server-Timing`` answer header (W3C: ``name;dur=<ms>`` items,
comma-separated), parsed defensively: a build without it gives the client totals only.

Stages the Router names (deployments/router.py): asgi (app entry to our handler), read, parse,
route, validate, queue (coalescer wait before the call left), call (router -> ModelServer
handle round trip), batch (wait on the replica for the model pass), model (the model pass),
replica (inside ModelServer.predict_many), resume (call back -> handler resumed), record,
encode, router (the whole handler). Derived here: ``outside the router`` = client total -
router (HAProxy, the Router's HTTP server, the client), ``hop`` = call - replica (the handle's
round trip without the replica's own time).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np

HEADER = "X-Mlops-Timing"


def parse_server_timing(value: str | None) -> dict[str, float]:
    """``{name: ms}`` of a Server-Timing header value; items without a readable ``dur`` are
    left out, a repeated name adds up."""
    out: dict[str, float] = {}
    if not value:
        return out
    for item in value.split(","):
        parts = [p.strip() for p in item.split(";")]
        name = parts[0]
        if not name:
            continue
        for p in parts[1:]:
            key, _, val = p.partition("=")
            if key.strip().lower() == "dur":
                with contextlib.suppress(ValueError):
                    out[name] = out.get(name, 0.0) + float(val.strip().strip('"'))
    return out


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
    }


def run(
    url: str, bodies: Path, n: int = 400, warmup: int = 20, timing: bool = True
) -> dict[str, Any]:
    """``warmup`` + ``n`` sequential POSTs of the JSON bodies in ``bodies`` (one per line,
    used in turn) to ``url`` on one keep-alive connection; with ``timing`` the requests ask
    for Server-Timing. Returns the client total's median / p90, and with Server-Timing the
    same per stage, plus ``outside the router`` and ``hop``."""
    import httpx

    lines = [ln.encode() for ln in bodies.read_text().splitlines() if ln.strip()]
    headers = {"Content-Type": "application/json"}
    if timing:
        headers[HEADER] = "1"
    totals: list[float] = []
    stages: dict[str, list[float]] = {}
    order: list[str] = []
    errors = 0
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(limits=limits, timeout=10) as client:
        for i in range(warmup + n):
            body = lines[i % len(lines)]
            t0 = time.perf_counter()
            r = client.post(url, content=body, headers=headers)
            total = (time.perf_counter() - t0) * 1000
            if i < warmup:
                continue
            if r.status_code != 200:
                errors += 1
                continue
            totals.append(total)
            st = parse_server_timing(r.headers.get("server-timing")) if timing else {}
            for name, ms in st.items():
                if name not in stages:
                    stages[name] = []
                    order.append(name)
                stages[name].append(ms)
            if "router" in st:
                stages.setdefault("outside the router", []).append(total - st["router"])
            if "call" in st and "replica" in st:
                stages.setdefault("hop", []).append(st["call"] - st["replica"])
    # Not "requests" / "errors": this is not a measured run of the throughput tables.
    out: dict[str, Any] = {"sent": n, "not_200": errors}
    if totals:
        out["client_total"] = _stats(totals)
    if timing:
        out["server_timing"] = bool(order)
        names = order + [k for k in ("outside the router", "hop") if k in stages]
        out["stages"] = {k: _stats(stages[k]) for k in names}
    return out
