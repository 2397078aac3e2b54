"""Where the request path spends CPU: py-spy on replica processes while wrk loads the stack.

`py-spy record --format raw --threads` writes collapsed stacks (``thread;frame;... count``);
`summarize` turns them into the share of samples per thread, the functions with the most
samples on top of the stack (self) and anywhere in it (inclusive), and a few categories.
Idle threads (waiting in epoll / on a lock) are not sampled; a thread that py-spy cannot see
as idle while it waits in native code (Ray's `Worker.main_loop`) still shows up.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.stack import CLK_TCK, stat_ticks

# (label, pattern on a whole collapsed stack): share of samples whose stack matches.
CATEGORIES: list[tuple[str, str]] = [
    ("model call (LoadedModel.predict)", r"LoadedModel\.predict"),
    ("  of which sklearn's feature-names warning", r"_check_feature_names[^;]*;[^;]*warn"),
    ("warnings written to Serve's stderr logger", r"StreamToLogger"),
    ("model pass queue (ModelServer._next_pass)", r"_next_pass"),
    ("Ray metric records (Serve's own and ours)", r"ray/util/metrics\.py"),
    ("  of which ours (monitoring/metrics.py)", r"monitoring/metrics\.py"),
    ("request parsing (schemas.parse_json / to_matrix)", r"schemas\.py"),
    ("records for the drift monitor", r"_record \(deployments/router|_flush_records|records\.py"),
    ("FastAPI / Starlette", r"fastapi/|starlette/"),
    ("uvicorn HTTP server", r"uvicorn/"),
    ("Serve handle call (router -> ModelServer)", r"handle\.py|request_router/"),
    ("gRPC (grpc.aio)", r"grpc/"),
    ("Serve replica wrapper (replica.py)", r"serve/_private/replica\.py"),
    ("pickling (cloudpickle / pickle)", r"cloudpickle|[Pp]ickl"),
    ("JSON out (the router's _json / json.dumps)", r"_json \(deployments/router|json/encoder"),
]

# A thread that used less CPU than this while sampled is taken as idle: py-spy counts some
# native waits as activity (the main thread of a Ray worker in `Worker.main_loop`, gRPC's
# poller thread), which /proc shows as using next to no CPU.
IDLE_CORES = 0.05
THREAD = re.compile(r"^thread \((?P<tid>\w+)\)(?:: (?P<name>.*))?$")

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def thread_ticks(pid: int) -> dict[int, int]:
    """utime + stime (clock ticks) of each thread of ``pid``."""
    return stat_ticks(Path(f"/proc/{pid}/task"))


def record(
    pids: dict[str, int], seconds: float, out_dir: Path, rate: int = 100
) -> tuple[dict[str, Path], dict[str, dict[int, float]]]:
    """Sample each ``label: pid`` for ``seconds`` at once. Returns label -> collapsed-stack
    file, and label -> {thread id: CPU cores it used meanwhile} (from /proc)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    procs, files = [], {}
    before = {label: thread_ticks(pid) for label, pid in pids.items()}
    t0 = time.monotonic()
    for label, pid in pids.items():
        path = out_dir / f"{label}-{pid}.txt"
        files[label] = path
        cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
        cmd += ["--rate", str(rate), "--format", "raw", "--nonblocking", "--threads"]
        cmd += ["--output", str(path)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=seconds + 60)
        if p.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-1000:]}")
    elapsed = time.monotonic() - t0
    cpu = {}
    for label, pid in pids.items():
        after = thread_ticks(pid)
        cpu[label] = {
            tid: (t - before[label].get(tid, 0)) / CLK_TCK / elapsed for tid, t in after.items()
        }
    return files, cpu


def _short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarize(
    path: Path, thread_cpu: dict[int, float] | None = None, top: int = 15
) -> dict[str, Any]:
    """Top functions by self and inclusive samples, as shares of the samples of threads that
    used CPU (``thread_cpu``: thread id -> cores, from `record`), and the CPU of each thread."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    cat_c: Counter[str] = Counter()
    names: dict[int, str] = {}
    patterns = [(label, re.compile(rx)) for label, rx in CATEGORIES]
    total = skipped = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        m = THREAD.match(frames[0]) if frames else None
        if m:
            tid = int(m.group("tid"), 0)
            names[tid] = m.group("name") or str(tid)
            frames = frames[1:]
            if thread_cpu is not None and thread_cpu.get(tid, 0.0) < IDLE_CORES:
                skipped += n
                continue
        for label, rx in patterns:
            if rx.search(stack):
                cat_c[label] += n
        frames = [_short(f) for f in frames]
        if not frames:
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl_c[f] += n
    threads = []
    if thread_cpu is not None:
        busy = sorted(thread_cpu.items(), key=lambda kv: -kv[1])
        threads = [(names.get(tid, f"thread {tid}"), cores) for tid, cores in busy[:5]]
    result: dict[str, Any] = {
        "samples": total,
        "samples_idle_threads": skipped,
        "cpu_cores": sum(thread_cpu.values()) if thread_cpu else None,
        "threads": threads,
    }
    if not total:
        return {**result, "self": [], "inclusive": [], "categories": []}

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, n / total) for f, n in c.most_common(top)]

    return {
        **result,
        "self": share(self_c),
        "inclusive": share(incl_c),
        "categories": [(label, cat_c[label] / total) for label, _ in CATEGORIES if cat_c[label]],
    }
