"""Load generation with wrk (C, epoll; one thread is plenty on 2 cores), run at `nice -n 19` so
that it does not take CPU from the servers it measures.

Each run POSTs bodies from a file, used in turn: JSON bodies one per line (``.jsonl``), or
binary bodies with headers of their own (``.rec``, `write_records`: the Open Inference
Protocol's binary tensor extension, ``.npy``). `wrk_post.lua` prints one JSON line: requests,
non-2xx count, socket errors, latency percentiles, versions answered.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

LUA = Path(__file__).with_name("wrk_post.lua")


class WrkMissing(RuntimeError):
    pass


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(
            "wrk not found: `apt-get install -y wrk` (Debian/Ubuntu; `make bench` does it when "
            "run as root), or build it from https://github.com/wg/wrk"
        )
    return path


def write_bodies(path: Path, X: np.ndarray, rows_per_request: int, count: int, seed: int) -> Path:
    """``count`` request bodies of ``rows_per_request`` rows drawn from ``X``, one per line.

    Many distinct rows, drawn from the data the models were trained on, so the drift monitor
    sees ordinary traffic (one row repeated would look like drift)."""
    with path.open("w") as fh:
        for rows in _draws(X, rows_per_request, count, seed):
            fh.write(json.dumps({"features": rows.tolist()}, separators=(",", ":")) + "\n")
    return path


def write_records(path: Path, records: list[tuple[dict[str, str], bytes]]) -> Path:
    """Request bodies with their own headers for `wrk_post.lua` (a file ending in ``.rec``):
    per record a line ``<number of headers> <body length>``, a line ``Name: value`` per header,
    then the body's bytes as they are."""
    if path.suffix != ".rec":
        raise ValueError(f"{path}: record files end in .rec (wrk_post.lua reads them by that)")
    with path.open("wb") as fh:
        for headers, body in records:
            fh.write(f"{len(headers)} {len(body)}\n".encode())
            for name, value in headers.items():
                if "\n" in name + value or ":" in name:
                    raise ValueError(f"header {name!r} cannot go in a record file")
                fh.write(f"{name}: {value}\n".encode())
            fh.write(body)
    return path


def read_records(path: Path) -> list[tuple[dict[str, str], bytes]]:
    """The records of a `write_records` file."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        n_headers, length = (int(x) for x in data[pos:end].split())
        pos = end + 1
        headers = {}
        for _ in range(n_headers):
            end = data.index(b"\n", pos)
            name, _, value = data[pos:end].decode().partition(": ")
            headers[name] = value
            pos = end + 1
        out.append((headers, data[pos : pos + length]))
        pos += length
    return out


def _draws(X: np.ndarray, rows_per_request: int, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [X[rng.integers(0, len(X), rows_per_request)] for _ in range(count)]


def oip_binary_body(rows: np.ndarray, name: str = "input-0") -> tuple[dict[str, str], bytes]:
    """An Open Inference Protocol infer request with the binary tensor data extension: a JSON
    header naming one FP64 tensor [rows, features] of ``binary_data_size`` bytes, then the raw
    little-endian row-major float64 data; header ``Inference-Header-Content-Length`` says
    where the JSON ends."""
    data = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        },
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return headers, head + data


def npy_body(rows: np.ndarray) -> tuple[dict[str, str], bytes]:
    """A ``POST /predict`` body as `numpy.save` writes a 2-D float64 array, rows x features."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(rows, dtype=np.float64), allow_pickle=False)
    return {"Content-Type": "application/x-npy"}, buf.getvalue()


def write_binary_bodies(
    path: Path, X: np.ndarray, rows_per_request: int, count: int, seed: int, form: str
) -> Path:
    """``count`` bodies of ``rows_per_request`` rows drawn from ``X`` (as `write_bodies`) in
    binary ``form``: ``binary`` (`oip_binary_body`) or ``npy`` (`npy_body`)."""
    make = {"binary": oip_binary_body, "npy": npy_body}[form]
    return write_records(path, [make(rows) for rows in _draws(X, rows_per_request, count, seed)])


@dataclass
class WrkResult:
    requests: int = 0
    duration_s: float = 0.0
    non2xx: int = 0
    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    status_counts: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Every non-2xx answer and every connection error (connect, read, write, timeout)."""
        return self.non2xx + self.connect + self.read + self.write + self.timeout

    @property
    def rps(self) -> float:
        """Successful (2xx) requests per second."""
        return (self.requests - self.non2xx) / self.duration_s if self.duration_s else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["errors"] = self.errors
        d["rps"] = self.rps
        return d

    @classmethod
    def parse(cls, out: str) -> WrkResult:
        line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{out[-2000:]}")
        d = json.loads(line[len("BENCH_JSON ") :])
        ok = d["requests"] > 0 and d["requests"] > d["non2xx"]

        def ms(key: str) -> float | None:
            return d[key] / 1000 if ok else None

        return cls(
            requests=d["requests"],
            duration_s=d["duration_us"] / 1e6,
            non2xx=d["non2xx"],
            connect=d["connect"],
            read=d["read"],
            write=d["write"],
            timeout=d["timeout"],
            p50_ms=ms("p50_us"),
            p95_ms=ms("p95_us"),
            p99_ms=ms("p99_us"),
            mean_ms=ms("lat_mean_us"),
            max_ms=ms("lat_max_us"),
            status_counts=d["status_counts"],
            versions=d["versions"],
        )

    @staticmethod
    def combine(parts: list[WrkResult]) -> WrkResult:
        """Counts added up; latencies: the worst of the parts (used for step-load phases)."""
        out = WrkResult()
        for p in parts:
            out.requests += p.requests
            out.duration_s += p.duration_s
            out.non2xx += p.non2xx
            out.connect += p.connect
            out.read += p.read
            out.write += p.write
            out.timeout += p.timeout
            for k, v in p.status_counts.items():
                out.status_counts[k] = out.status_counts.get(k, 0) + v
            for k, v in p.versions.items():
                out.versions[k] = out.versions.get(k, 0) + v
        for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
            vals = [getattr(p, key) for p in parts if getattr(p, key) is not None]
            setattr(out, key, max(vals) if vals else None)
        return out


def wrk_command(
    url: str, bodies: Path, connections: int, duration_s: float, timeout_s: float = 5.0
) -> list[str]:
    return [
        "nice",
        "-n",
        "19",
        wrk_binary(),
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{timeout_s:g}s",
        "-s",
        str(LUA),
        url,
        "--",
        str(bodies),
    ]


def run_wrk(
    url: str, bodies: Path, connections: int, duration_s: float, timeout_s: float = 5.0
) -> WrkResult:
    cmd = wrk_command(url, bodies, connections, duration_s, timeout_s)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return WrkResult.parse(proc.stdout)


def start_wrk(
    url: str, bodies: Path, connections: int, duration_s: float, timeout_s: float = 5.0
) -> subprocess.Popen:
    """Start wrk in the background (the caller profiles the servers meanwhile)."""
    cmd = wrk_command(url, bodies, connections, duration_s, timeout_s)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(proc: subprocess.Popen) -> WrkResult:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err[-2000:]}")
    return WrkResult.parse(out)
