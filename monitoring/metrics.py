"""The platform's own metrics: names, tags and one constructor each.

They are created with ``ray.serve.metrics`` (inside Serve replicas, which adds application,
deployment and replica tags) or ``ray.util.metrics`` (elsewhere) and reach Prometheus through
each Ray node's metrics port. Ray exports them as ``ray_<name>``, counters with a ``_total``
suffix: ``mlops_requests`` is scraped as ``ray_mlops_requests_total``. Nothing is created at
import (Ray must be running); call `Metrics.create()` in a replica or actor constructor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

PREFIX = "mlops_"
LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
# Ray's metrics agent drops a gauge series that its worker has not set again within about two
# report intervals, so a gauge set once (a canary weight that does not change for an hour)
# vanishes from /metrics. Components re-set their gauges this often (`Metrics.keep_alive`).
GAUGE_REFRESH_S = 2.0

# name -> (kind, description, tag keys). The single list that dashboards and alerts refer to.
SPECS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "mlops_requests": (
        "counter",
        "Prediction requests by version and outcome",
        ("model_version", "slot", "route", "outcome"),
    ),
    "mlops_errors": ("counter", "Failed requests by version and kind", ("model_version", "kind")),
    "mlops_predictions": ("counter", "Rows predicted", ("model_version",)),
    "mlops_request_latency_ms": (
        "histogram",
        "End-to-end latency in the router (ms)",
        ("model_version",),
    ),
    "mlops_canary_weight": ("gauge", "Traffic weight of each slot", ("slot", "model_version")),
    "mlops_rollout_step": (
        "gauge",
        "Index of the current canary step (-1: no rollout)",
        ("model_version",),
    ),
    "mlops_rollout_events": ("counter", "Rollout outcomes", ("model_version", "event")),
    "mlops_shadow_agreement": (
        "gauge",
        "Share of shadowed rows where challenger agrees",
        ("model_version",),
    ),
    "mlops_accuracy": ("gauge", "Windowed accuracy on labelled feedback", ("model_version",)),
    "mlops_drift_score": ("gauge", "Drift statistic per feature", ("feature", "test")),
    "mlops_drift_detected": ("gauge", "1 when a drift detector fires", ("detector",)),
    "mlops_feedback": ("counter", "Feedback labels by outcome", ("outcome",)),
    "mlops_retraining_runs": ("counter", "Retraining runs by outcome", ("outcome",)),
    "mlops_records_dropped": (
        "counter",
        "Records dropped on the way to the drift monitor",
        ("reason",),
    ),
    "mlops_model_passes": ("counter", "Model passes of a ModelServer slot", ("slot",)),
    "mlops_model_pass_requests": (
        "counter",
        "Requests carried by those passes (divided by the passes: requests per pass)",
        ("slot",),
    ),
    "mlops_registry_reachable": (
        "gauge",
        "1 when the MLflow registry answered the rollout controller's last call",
        (),
    ),
}


def exported_name(name: str) -> str:
    """The series name Prometheus sees for one of `SPECS` (histograms add _bucket etc.)."""
    kind = SPECS[name][0]
    return f"ray_{name}_total" if kind == "counter" else f"ray_{name}"


@dataclass
class Metrics:
    """Handles to the metrics a component uses."""

    handles: dict[str, Any]
    # gauge name -> {sorted tag items: value}: what `keep_alive` re-sets.
    gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(default_factory=dict)
    # Counts and observations not yet handed to Ray (see `add` / `observe`).
    _counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    _observed: list[tuple[str, float, tuple[tuple[str, str], ...]]] = field(default_factory=list)

    @classmethod
    def create(cls, names: list[str], serve: bool = True) -> Metrics:
        if serve:
            from ray.serve import metrics as m
        else:
            from ray.util import metrics as m
        handles = {}
        for name in names:
            kind, desc, tags = SPECS[name]
            if kind == "counter":
                handles[name] = m.Counter(name, description=desc, tag_keys=tags)
            elif kind == "gauge":
                handles[name] = m.Gauge(name, description=desc, tag_keys=tags)
            else:
                handles[name] = m.Histogram(
                    name, description=desc, boundaries=LATENCY_BOUNDARIES_MS, tag_keys=tags
                )
        return cls(handles)

    def __getitem__(self, name: str) -> Any:
        return self.handles[name]

    def set_gauge(self, name: str, series: list[tuple[dict[str, str], float]]) -> None:
        """Replace every series of gauge ``name`` with ``series`` ((tags, value) pairs).

        Series left out are no longer exported (Ray ages them out), so a slot that moved to
        another version stops reporting the old one."""
        kept = {}
        for tags, value in series:
            kept[tuple(sorted(tags.items()))] = float(value)
            self.handles[name].set(float(value), tags=tags)
        self.gauges[name] = kept

    def add(self, name: str, value: float, tags: tuple[tuple[str, str], ...]) -> None:
        """Count ``value`` on counter ``name`` at the next `flush`, summed per tag set.

        A Ray metric record costs tens of microseconds of Python (tag merging and checks, plus
        Serve's context tags); a router counting three metrics per request spent a tenth of
        its CPU there. Summing in a dict and adding once per tag set per second does not."""
        key = (name, tags)
        self._counts[key] = self._counts.get(key, 0.0) + value

    def observe(self, name: str, value: float, tags: tuple[tuple[str, str], ...]) -> None:
        """Observe ``value`` on histogram ``name`` at the next `flush` (off the request)."""
        self._observed.append((name, value, tags))

    def flush(self) -> None:
        """Hand the counts and observations gathered by `add` / `observe` to Ray."""
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, []
        for (name, tags), value in counts.items():
            self.handles[name].inc(value, tags=dict(tags))
        for name, value, tags in observed:
            self.handles[name].observe(value, tags=dict(tags))

    def refresh(self) -> None:
        """Flush pending counts, and set every remembered gauge series again (see
        GAUGE_REFRESH_S)."""
        self.flush()
        for name, series in self.gauges.items():
            for tags, value in series.items():
                self.handles[name].set(value, tags=dict(tags))

    async def keep_alive(self, interval_s: float = GAUGE_REFRESH_S) -> None:
        """Run `refresh` forever; a component starts it as a task next to its own loops.
        (Pending counts are flushed at the same pace.)"""
        while True:
            await asyncio.sleep(interval_s)
            self.refresh()
