"""The DriftMonitor's logic as a plain class: windows, feedback join, detectors, trigger.

`DriftMonitorCore` holds everything the DriftMonitor actor knows and decides; the actor is a
thin Ray wrapper that feeds it router records and ``/feedback`` items, calls `evaluate` every
``evaluate_interval_s`` and `should_retrain` after it, and reports the outcome of a retraining
with `retraining_started` / `retraining_finished`. The clock is injectable so tests drive time.

A version's task ("classification" by default, "regression" from its version info) picks
its prediction and label detectors: chi-square on predicted classes and the accuracy test
for a classifier; KS on the predicted values (against the predictions logged with the
reference sample, else the first ``prediction_reference_rows`` live predictions) and the
error test (live MSE against the registration RMSE) for a regressor. Predictions need not
be hashable: a pyfunc's dict or list per row is kept and skipped by the prediction detectors.

Trigger logic, per detector (``ks``, ``psi``, ``chi2``, ``accuracy``, ``prediction_ks``,
``error``):

- An evaluation is *over* when the detector fires on the window (see `monitoring.drift`).
  It moves the detector's streak only if enough new data arrived since the last evaluation
  that did (``min_new_samples`` rows, ``min_new_labels`` labels): evaluating the same window
  again is not fresh evidence.
- A detector is *due* after ``hysteresis_count`` consecutive over evaluations while armed.
- `should_retrain` answers True when a detector listed in ``trigger_on`` is due, no
  retraining is running, and ``cooldown_s`` has passed since the last trigger and since the
  last failed retraining. That answer *is* the trigger: it is recorded, and the detectors
  that caused it are disarmed.
- A disarmed detector re-arms when its statistic is clearly back (p-value above
  ``rearm_alpha``, PSI below ``psi_rearm_threshold``), when a retraining finishes, or when
  the champion changes. Streaks keep counting while a detector is disarmed, and a failed
  retraining re-arms without resetting them, so a drift that is still there triggers again
  as soon as the cooldown (counted from the failure) has passed.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from configs import DriftConfig
from monitoring.drift import (
    DETECTORS,
    REGRESSION_ONLY,
    ChangePoint,
    DriftReport,
    accuracy_change_point,
    drift_report,
    error_change_point,
)
from monitoring.windows import (
    Labelled,
    LabelWindow,
    Pending,
    RequestIndex,
    RowWindow,
    as_real,
    feature_matrix,
)

FEATURE_DETECTORS = ("ks", "psi", "chi2", "prediction_ks")
LABEL_DETECTORS = ("accuracy", "error")


def is_pinned(record: dict[str, Any]) -> bool:
    """Whether a router record comes from a request that pinned its model version."""
    return record.get("pinned") is True


def normalize_label(value: Any) -> Any:
    """A hashable, JSON-friendly label: numpy scalars to Python, whole floats to int.

    Predictions come from numpy (``np.int64(1)``) and labels from JSON (``1`` or ``1.0``);
    they must compare equal.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Label sources tracked one by one in status; more are counted together under OTHER_SOURCE.
MAX_SOURCES = 64
OTHER_SOURCE = "(other)"
# Fixed cost of one waiting early label (its entry, request id and timestamps), and Python
# bytes per character of the label's JSON (a float's 4 to 20 characters become a 32-byte
# object and a list slot): rough, on the generous side.
EARLY_OVERHEAD_BYTES = 300
EARLY_BYTES_PER_CHAR = 4


def label_bytes(label: Any) -> int:
    """Estimated memory of one ``/feedback`` label (a scalar or a list, as parsed from JSON)."""
    try:
        text = json.dumps(label, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(label)
    return EARLY_OVERHEAD_BYTES + EARLY_BYTES_PER_CHAR * len(text)


@dataclass
class _Early:
    """A label waiting for its prediction record."""

    label: Any
    ts: float
    source: str
    nbytes: int


@dataclass
class _Version:
    """What the monitor keeps for one model version."""

    rows: RowWindow
    labels: LabelWindow
    reference: np.ndarray | None = None
    reference_classes: list[Any] | dict[Any, float] | None = None
    baseline_accuracy: float | None = None
    feature_names: list[str] | None = None
    classes: list[Any] = field(default_factory=list)
    records: int = 0
    errors: int = 0
    last_ts: float | None = None
    task: str = "classification"
    baseline_rmse: float | None = None
    # Reference predicted values (regression): logged with the model, or frozen from the
    # first live predictions; then ``live_reference_end`` is the rows total where they end.
    reference_values: np.ndarray | None = None
    live_reference_end: int | None = None
    # Where the feature reference came from (see monitoring.reference); for "live", the rows
    # being collected (at most ``live_target``), then ``feature_reference_end``: the rows
    # total where the reference period ended and the analysis period starts.
    reference_source: str = "artifact"
    live_target: int | None = None
    live_rows: list[np.ndarray] = field(default_factory=list)
    live_predictions: list[Any] = field(default_factory=list)
    feature_reference_end: int | None = None
    # Indices of string (categorical) columns, seen in the reference or the served rows:
    # NaN in the windows, skipped by KS and PSI.
    string_columns: frozenset[int] = frozenset()

    @property
    def collecting(self) -> bool:
        """Whether this version's live reference is still being collected."""
        return self.live_target is not None and self.reference is None

    @property
    def live_collected(self) -> int:
        return sum(len(x) for x in self.live_rows)

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def canonical(self, value: Any) -> Any:
        """``value`` as one of the version's classes when it names one ("1" -> 1)."""
        value = normalize_label(value)
        if value in self.classes:
            return value
        for c in self.classes:
            if str(c) == str(value):
                return c
        return value


@dataclass
class _Detector:
    """Hysteresis state of one detector."""

    armed: bool = True
    streak: int = 0
    over: bool = False
    clear: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {"armed": self.armed, "streak": self.streak, "over": self.over}


class DriftMonitorCore:
    """Windows per model version, the feedback join, the detectors and the retraining trigger.

    Not thread-safe: the actor calls it from one thread (a Ray actor runs one call at a time).
    """

    def __init__(self, cfg: DriftConfig | None = None, clock: Callable[[], float] = time.time):
        self.cfg = cfg or DriftConfig()
        self._clock = clock
        self._versions: OrderedDict[str, _Version] = OrderedDict()
        self._index = RequestIndex(self.cfg.request_map_rows, self.cfg.request_map_ttl_s)
        self._champion: str | None = None
        self._detectors = {d: _Detector() for d in DETECTORS}
        # Window totals at the last evaluation that moved the streaks (fresh-evidence gate).
        self._counted_rows = 0
        self._counted_labels = 0
        self._last_report: DriftReport | None = None
        self._last_trigger: dict[str, Any] | None = None
        self._last_failure_ts: float | None = None
        self._retraining_since: float | None = None
        self._retraining = {"started": 0, "succeeded": 0, "failed": 0}
        self._records = {"accepted": 0, "rows": 0, "errors": 0, "invalid": 0, "ignored": 0}
        self._feedback = {"accepted": 0, "unknown": 0, "duplicate": 0, "invalid": 0, "pending": 0}
        # Labels that arrived before their prediction record, bounded by count and bytes.
        self._early: OrderedDict[str, _Early] = OrderedDict()
        self._early_bytes = 0
        # Per label source: labels accepted, and rows of its own it displaced in a labelled
        # window because it was at its limit (see LabelWindow). At most MAX_SOURCES entries.
        self._sources: dict[str, dict[str, int]] = {}

    # ---- versions and references -------------------------------------------------------
    @property
    def champion(self) -> str | None:
        """The version `evaluate` looks at."""
        return self._champion

    def _version(self, version: str) -> _Version:
        v = self._versions.get(version)
        if v is None:
            v = _Version(RowWindow(self.cfg.window_size), LabelWindow(self.cfg.label_window_size))
            self._versions[version] = v
            while len(self._versions) > self.cfg.max_versions:
                oldest = next(k for k in self._versions if k not in (self._champion, version))
                del self._versions[oldest]
        else:
            self._versions.move_to_end(version)
        return v

    def set_reference(
        self,
        version: str,
        reference_features: np.ndarray | None,
        reference_labels: Sequence[Hashable] | None = None,
        baseline_accuracy: float | None = None,
        feature_names: Sequence[str] | None = None,
        classes: Sequence[Hashable] | None = None,
        *,
        reference_predictions: Sequence[Hashable] | None = None,
        champion: bool = True,
        task: str = "classification",
        baseline_rmse: float | None = None,
        reference_source: str = "artifact",
    ) -> None:
        """Register what ``version`` was trained on and, by default, make it the champion.

        ``reference_features`` None makes a *live* reference (``reference_source`` "live"):
        the next ``live_reference_rows`` rows the version serves become it, and its feature
        and predicted-class detectors report "collecting reference (k of N rows)" until then
        and afterwards compare only the rows after them (`monitoring.reference`).

        ``reference_features`` is the reference sample logged at training (rows x features,
        the CSV under ``REFERENCE_ARTIFACT`` without its label column); ``reference_labels``
        its label column. The chi-square detector compares live predictions with
        ``reference_predictions`` (the model's own predictions on the reference rows) when
        given, which removes the model's bias from the comparison, else with the labels.
        ``baseline_accuracy`` is the held-out accuracy recorded at registration (None or
        NaN: the accuracy detector stays off for this version).

        A ``task`` "regression" version has no classes: ``reference_predictions`` (the
        model's predicted values on the reference rows) are the prediction KS reference (None:
        the first live predictions become it; the labels are never used, their spread is not
        the predictions'), and ``baseline_rmse`` (the hold-out RMSE at registration; None or
        NaN: no error detector) is the error detector's baseline.
        """
        version = str(version)
        ref, strings = (
            (None, frozenset())
            if reference_features is None
            else feature_matrix(reference_features)
        )
        if ref is not None and (ref.ndim != 2 or len(ref) == 0):
            raise ValueError("reference_features must be a non-empty 2-D array")
        if ref is not None and feature_names is not None and len(feature_names) != ref.shape[1]:
            raise ValueError(
                f"{len(feature_names)} feature names for {ref.shape[1]} reference columns"
            )
        v = self._version(version)
        v.reference = ref
        v.string_columns = strings
        v.feature_names = list(feature_names) if feature_names is not None else None
        v.task = task
        v.reference_source = "live" if ref is None else reference_source
        v.live_target = self.cfg.live_reference_rows if ref is None else None
        v.live_rows, v.live_predictions, v.feature_reference_end = [], [], None
        if v.regression:
            self._set_regression_reference(v, reference_predictions, baseline_rmse)
            if champion:
                self.set_champion(version)
            return
        v.classes = [normalize_label(c) for c in classes or []]
        source = reference_predictions if reference_predictions is not None else reference_labels
        v.reference_classes = None if source is None else [v.canonical(c) for c in source]
        if not v.classes and v.reference_classes:
            v.classes = sorted(set(v.reference_classes), key=str)
        # A version registered without the tag gives NaN: no baseline, no accuracy detector.
        ok = baseline_accuracy is not None and math.isfinite(float(baseline_accuracy))
        v.baseline_accuracy = float(baseline_accuracy) if ok else None
        if champion:
            self.set_champion(version)

    @staticmethod
    def _set_regression_reference(
        v: _Version, predictions: Sequence[Any] | None, baseline_rmse: float | None
    ) -> None:
        v.classes, v.reference_classes, v.baseline_accuracy = [], None, None
        values = None
        if predictions is not None:
            values = np.asarray([x for x in map(as_real, predictions) if x is not None])
        v.reference_values = values if values is not None and values.size else None
        v.live_reference_end = None
        ok = baseline_rmse is not None and math.isfinite(float(baseline_rmse))
        v.baseline_rmse = float(baseline_rmse) if ok else None

    def set_champion(self, version: str) -> None:
        """Evaluate ``version`` from now on; a change of champion resets the hysteresis."""
        version = str(version)
        self._version(version)
        if version != self._champion:
            self._champion = version
            self._detectors = {d: _Detector() for d in DETECTORS}
            self._counted_rows = self._counted_labels = 0

    # ---- data in -------------------------------------------------------------------------
    def add_records(self, records: list[dict[str, Any]]) -> dict[str, int]:
        """Take a batch of router records; never raises on a bad record (it is counted).

        A record is ``{"request_id", "features", "prediction" | "predictions",
        "model_version", "latency_ms", "error", "ts"}``; ``features`` is one row or a list
        of rows, with one prediction per row. Error records count against the version and
        carry no rows; records of another ``kind`` than ``"request"`` (shadow) are ignored.
        Returns counts for this batch: accepted, rows, errors, invalid, ignored.
        """
        now = self._clock()
        out = dict.fromkeys(self._records, 0)
        for rec in records:
            outcome, rows = self._add_record(rec, now)
            out[outcome] += 1
            out["rows"] += rows
        for k, n in out.items():
            self._records[k] += n
        return out

    def _add_record(self, rec: Any, now: float) -> tuple[str, int]:
        if not isinstance(rec, dict) or rec.get("model_version") in (None, ""):
            return "invalid", 0
        if rec.get("kind", "request") != "request":
            return "ignored", 0
        ts = rec.get("ts")
        ts = float(ts) if isinstance(ts, (int, float)) and math.isfinite(ts) else now
        v = self._version(str(rec["model_version"]))
        v.records += 1
        v.last_ts = ts
        if rec.get("error") is not None or rec.get("features") is None:
            v.errors += 1
            return "errors", 0
        try:
            X, strings = feature_matrix(rec["features"])
            raw = rec["predictions"] if "predictions" in rec else [rec["prediction"]]
            if X.ndim == 1:
                X = X[None, :]
            preds = [v.canonical(p) for p in _per_row(raw, len(X))]
        except (KeyError, TypeError, ValueError):
            return "invalid", 0
        width = v.rows.n_features
        if (
            X.ndim != 2
            or len(X) == 0
            or len(preds) != len(X)
            or (width is not None and X.shape[1] != width)
            or not _finite(X, strings)
        ):
            return "invalid", 0
        if strings - v.string_columns:
            v.string_columns = v.string_columns | strings
        v.rows.append(X, preds)
        if v.collecting:
            self._collect_live(v, X, preds)
        rid = rec.get("request_id")
        if isinstance(rid, str) and rid:
            entry = Pending(str(rec["model_version"]), X, preds, ts, pinned=is_pinned(rec))
            self._index.put(rid, entry, now)
            early = self._pop_early(rid)
            if early is not None:
                self._feedback["pending"] -= 1
                self._feedback[self._join(entry, early.label, now, early.source)] += 1
        return "accepted", len(X)

    @staticmethod
    def _collect_live(v: _Version, X: np.ndarray, preds: list[Any]) -> None:
        """Add served rows to ``v``'s live reference; at ``live_target`` rows it becomes the
        reference (a classifier's predicted classes on them the chi-square reference)."""
        take = v.live_target - v.live_collected
        v.live_rows.append(X[:take].copy())
        v.live_predictions.extend(preds[:take])
        if v.live_collected < v.live_target:
            return
        v.reference = np.vstack(v.live_rows)
        v.feature_reference_end = v.rows.total - (len(X) - min(take, len(X)))
        if not v.regression:
            hashable = [p for p in v.live_predictions if isinstance(p, Hashable)]
            v.reference_classes = hashable or None
            if not v.classes and hashable:
                v.classes = sorted(set(hashable), key=str)
        v.live_rows, v.live_predictions = [], []

    def _pop_early(self, rid: str) -> _Early | None:
        early = self._early.pop(rid, None)
        if early is not None:
            self._early_bytes -= early.nbytes
        return early

    def _drop_oldest_early(self) -> None:
        """The oldest waiting label gives up: it counts as unknown."""
        _, early = self._early.popitem(last=False)
        self._early_bytes -= early.nbytes
        self._feedback["pending"] -= 1
        self._feedback["unknown"] += 1

    def _expire_early(self, now: float) -> None:
        """Labels whose record never came within the grace period are unknown after all."""
        limit = now - self.cfg.feedback_grace_s
        while self._early and next(iter(self._early.values())).ts < limit:
            self._drop_oldest_early()

    def add_feedback(self, items: list[dict[str, Any]], source: str = "default") -> dict[str, Any]:
        """Join ground-truth labels to earlier predictions by request id.

        ``source`` names who sent the labels (the label source the router authenticated): a
        version's labelled window limits how much of it one source may hold (``max_source_share``
        while two or more sources have labels in it, ``max_labels_per_source`` always); a label
        from a source at its limit replaces that source's own oldest label, counted as
        ``displaced`` for the source in `status`.

        Each item is ``{"request_id": str, "label": label}``, ``label`` a list (one per row,
        in row order) for a multi-row request. Returns counts for this batch:

        - ``accepted``: joined; each row goes to its version's labelled window,
        - ``pending``: no prediction record for that id yet (records travel in batches, so a
          quick client's label can arrive first); it waits ``feedback_grace_s`` to be joined,
          then counts as unknown,
        - ``unknown``: never seen, or older than ``request_map_ttl_s`` or evicted from the
          bounded index (the monitor cannot tell these apart once the entry is gone),
        - ``duplicate``: that request was already labelled (the first label stands),
        - ``invalid``: not an item, or a label count that does not match the request's rows.

        One bad item never stops the rest of the batch. Per-version accuracy since a time
        (the canary analysis) comes from `labelled_since`.
        """
        now = self._clock()
        self._index.expire(now)
        self._expire_early(now)
        out: dict[str, int] = dict.fromkeys(self._feedback, 0)
        for item in items:
            out[self._add_one_feedback(item, now, source)] += 1
        for k in self._feedback:
            self._feedback[k] += out[k]
        return out

    def _source_stats(self, source: str) -> dict[str, int]:
        stats = self._sources.get(source)
        if stats is None:
            if len(self._sources) >= MAX_SOURCES:
                source = OTHER_SOURCE
            stats = self._sources.setdefault(source, {"accepted": 0, "displaced": 0})
        return stats

    def _add_one_feedback(self, item: Any, now: float, source: str) -> str:
        if not isinstance(item, dict) or "label" not in item:
            return "invalid"
        rid = item.get("request_id")
        if not isinstance(rid, str):
            return "invalid"
        entry = self._index.get(rid, now)
        if entry is None:
            # Records travel in batches, so a quick client's label can beat its record here.
            if rid in self._early:
                return "duplicate"
            cfg = self.cfg
            nbytes = label_bytes(item["label"])
            if (
                cfg.feedback_grace_s <= 0
                or cfg.feedback_grace_items <= 0
                or nbytes > cfg.feedback_grace_bytes
            ):
                return "unknown"
            # Oldest waiting labels make room (count and bytes bound); they count as unknown.
            while self._early and (
                len(self._early) >= cfg.feedback_grace_items
                or self._early_bytes + nbytes > cfg.feedback_grace_bytes
            ):
                self._drop_oldest_early()
            self._early[rid] = _Early(item["label"], now, source, nbytes)
            self._early_bytes += nbytes
            return "pending"
        return self._join(entry, item["label"], now, source)

    def _join(self, entry: Pending, label: Any, now: float, source: str) -> str:
        if entry.labelled:
            return "duplicate"
        labels = list(label) if isinstance(label, (list, tuple)) else [label]
        if len(labels) != entry.rows:
            return "invalid"
        v = self._version(entry.version)
        stats = self._source_stats(source)
        share, per_source = self.cfg.max_source_share, self.cfg.max_labels_per_source
        for row, pred, lab in zip(entry.features, entry.predictions, labels, strict=True):
            item = Labelled(row.copy(), pred, v.canonical(lab), now, source, entry.pinned)
            stats["displaced"] += v.labels.append(item, share, per_source)
        stats["accepted"] += 1
        entry.labelled = True
        return "accepted"

    def displaced_total(self) -> int:
        """Labelled rows displaced by the per-source limits so far, every source together."""
        return sum(s["displaced"] for s in self._sources.values())

    # ---- evaluation and trigger ----------------------------------------------------------
    def evaluate(self, now: float | None = None) -> DriftReport:
        """Run the detectors on the champion's windows and update the hysteresis state."""
        now = self._clock() if now is None else now
        self._index.expire(now)
        self._expire_early(now)
        cfg = self.cfg
        if self._champion is None:
            rep = DriftReport(version=None, ts=now)
            # Listed as for a classifier (the default task): no version, no task known.
            default = [d for d in DETECTORS if d not in REGRESSION_ONLY]
            rep.skipped = dict.fromkeys(default, "no champion version set")
            self._last_report = rep
            return rep
        v = self._versions[self._champion]
        labelled = v.labels.items()
        ref_values, ref_source, cur_values = self._prediction_values(v)
        current, current_predictions = self._analysis_rows(v)
        rep = drift_report(
            version=self._champion,
            ts=now,
            reference=v.reference,
            current=current,
            feature_names=v.feature_names,
            string_columns=v.string_columns,
            min_samples=cfg.min_samples,
            ks_alpha=cfg.ks_alpha,
            psi_threshold=cfg.psi_threshold,
            psi_bins=cfg.psi_bins,
            reference_classes=v.reference_classes,
            current_predictions=current_predictions,
            classes=v.classes,
            chi2_alpha=cfg.chi2_alpha,
            chi2_min_effect=cfg.chi2_min_effect,
            chi2_method=cfg.chi2_method,
            correct=sum(1 for it in labelled if it.correct),
            n_labelled=len(labelled),
            baseline_accuracy=v.baseline_accuracy,
            min_labelled=cfg.min_labelled,
            accuracy_tolerance=cfg.accuracy_tolerance,
            accuracy_alpha=cfg.accuracy_alpha,
            task=v.task,
            reference_values=ref_values,
            reference_values_source=ref_source,
            current_values=cur_values,
            prediction_ks_alpha=cfg.prediction_ks_alpha,
            abs_errors=[e for e in (it.abs_error for it in labelled) if e is not None],
            baseline_rmse=v.baseline_rmse,
            error_tolerance=cfg.error_tolerance,
            error_alpha=cfg.error_alpha,
        )
        if v.collecting:
            waiting = f"collecting reference ({v.live_collected} of {v.live_target} rows)"
            for d in ("ks", "psi") if v.regression else ("ks", "psi", "chi2"):
                rep.skipped[d] = waiting
        if v.rows.total - self._counted_rows >= cfg.min_new_samples:
            self._counted_rows = v.rows.total
            for d in FEATURE_DETECTORS:
                self._step(d, rep)
        if v.labels.total - self._counted_labels >= cfg.min_new_labels:
            self._counted_labels = v.labels.total
            for d in LABEL_DETECTORS:
                self._step(d, rep)
        self._last_report = rep
        return rep

    @staticmethod
    def _analysis_rows(v: _Version) -> tuple[np.ndarray, list[Any]]:
        """The window's rows and predictions the detectors compare with the reference: after
        a live reference, only the rows served after it (the reference rows themselves would
        dilute a shift)."""
        X, preds = v.rows.features(), v.rows.predictions()
        if v.feature_reference_end is None:
            return X, preds
        new = min(len(preds), max(v.rows.total - v.feature_reference_end, 0))
        return X[len(X) - new :], preds[len(preds) - new :]

    def _prediction_values(self, v: _Version) -> tuple[np.ndarray | None, str, np.ndarray]:
        """(reference predicted values, where they came from, current values) of a
        regression version; numeric predictions only. Without logged reference predictions
        the first ``prediction_reference_rows`` live ones are frozen as the reference and
        only later rows are compared with them."""
        if not v.regression:
            return None, "", np.empty(0)
        preds = v.rows.predictions()
        need = min(self.cfg.prediction_reference_rows, self.cfg.window_size)
        if v.reference_values is None and v.live_reference_end is None:
            values = [x for x in map(as_real, preds[:need]) if x is not None]
            if len(preds) >= need and len(values) >= min(need, self.cfg.min_samples):
                v.reference_values = np.asarray(values)
                v.live_reference_end = v.rows.total - (len(preds) - need)
        if v.live_reference_end is not None:
            new = min(len(preds), max(v.rows.total - v.live_reference_end, 0))
            preds = preds[len(preds) - new :]
            source = f"first {len(v.reference_values)} live predictions"
        else:
            source = "reference sample's predictions"
        current = np.asarray([x for x in map(as_real, preds) if x is not None])
        return v.reference_values, source, current

    def _step(self, name: str, rep: DriftReport) -> None:
        det = self._detectors[name]
        det.over = bool(rep.fired.get(name, False))
        det.streak = det.streak + 1 if det.over else 0
        det.clear = self._is_clear(name, rep)
        if det.clear and not det.armed:
            det.armed = True

    def _is_clear(self, name: str, rep: DriftReport) -> bool:
        cfg = self.cfg
        if name in rep.skipped:
            return False
        if name == "ks":
            return rep.ks_min_adjusted_p is not None and rep.ks_min_adjusted_p >= cfg.rearm_alpha
        if name == "psi":
            return rep.psi_max is not None and rep.psi_max < cfg.psi_rearm_threshold
        if name == "chi2":
            chi = rep.chi2
            return chi is not None and (
                chi.p_value >= cfg.rearm_alpha or chi.effect < cfg.chi2_min_effect
            )
        if name == "prediction_ks":
            pks = rep.prediction_ks
            return pks is not None and pks.p_value >= cfg.rearm_alpha
        if name == "error":
            err = rep.error
            return err is not None and err.p_value >= cfg.rearm_alpha
        acc = rep.accuracy
        return acc is not None and acc.p_value >= cfg.rearm_alpha

    def should_retrain(self, now: float | None = None) -> tuple[bool, str, dict[str, Any]]:
        """Decide from the latest `evaluate`: ``(trigger, reason, numbers)``.

        ``reason`` says why (or why not); ``numbers`` holds the figures behind it. A True
        answer is recorded as the trigger and starts the cooldown: call
        `retraining_started` when the retraining is launched, or `retraining_finished`
        with ``ok=False`` if it could not be.
        """
        now = self._clock() if now is None else now
        cfg = self.cfg
        k = cfg.hysteresis_count
        due = [
            d for d in cfg.trigger_on if self._detectors[d].armed and self._detectors[d].streak >= k
        ]
        numbers = self._numbers(due)
        if self._retraining_since is not None:
            return False, f"a retraining is running since t={self._retraining_since:.0f}", numbers
        if not due:
            streaks = ", ".join(f"{d} {self._detectors[d].streak}/{k}" for d in cfg.trigger_on)
            why = f"no armed detector over threshold {k} times in a row ({streaks})"
            return False, why, numbers
        last = [t for t in (self._last_trigger_ts(), self._last_failure_ts) if t is not None]
        ready_at = max(last) + cfg.cooldown_s if last else -math.inf
        if now < ready_at:
            wait = f"{ready_at - now:.0f}s"
            return False, f"cooldown: {', '.join(due)} due, next trigger allowed in {wait}", numbers
        rep = self._last_report
        reason = "; ".join(rep.reasons.get(d, d) for d in due) if rep else ", ".join(due)
        self._last_trigger = {"ts": now, "detectors": due, "reason": reason, "numbers": numbers}
        for d in due:
            self._detectors[d].armed = False
            self._detectors[d].streak = 0
        return True, reason, numbers

    def _last_trigger_ts(self) -> float | None:
        return None if self._last_trigger is None else self._last_trigger["ts"]

    def _numbers(self, detectors: list[str]) -> dict[str, Any]:
        rep = self._last_report
        out: dict[str, Any] = {
            "version": self._champion,
            "detectors": list(detectors),
            "streaks": {d: s.streak for d, s in self._detectors.items()},
        }
        if rep is None:
            return out
        out["n_current"] = rep.n_current
        if rep.features:
            out["ks_min_adjusted_p"] = rep.ks_min_adjusted_p
            out["ks_flagged"] = {f.name: f.ks_p_value for f in rep.features if f.ks_flagged}
            out["psi_max"] = rep.psi_max
            out["psi_flagged"] = {f.name: f.psi for f in rep.features if f.psi_flagged}
        if rep.chi2 is not None:
            out["chi2"] = {
                "statistic": rep.chi2.statistic,
                "p_value": rep.chi2.p_value,
                "effect": rep.chi2.effect,
            }
        if rep.accuracy is not None:
            out["accuracy"] = rep.accuracy.accuracy
            out["n_labelled"] = rep.accuracy.n
            out["baseline_accuracy"] = rep.accuracy.baseline
            out["accuracy_p_value"] = rep.accuracy.p_value
        if rep.prediction_ks is not None:
            out["prediction_ks"] = {
                "statistic": rep.prediction_ks.statistic,
                "p_value": rep.prediction_ks.p_value,
                "reference": rep.prediction_ks.reference_source,
            }
        if rep.error is not None:
            out["rmse"] = rep.error.rmse
            out["mae"] = rep.error.mae
            out["n_labelled"] = rep.error.n
            out["baseline_rmse"] = rep.error.baseline_rmse
            out["error_p_value"] = rep.error.p_value
        return out

    def retraining_started(self, now: float | None = None) -> None:
        """A retraining was launched; no other trigger until `retraining_finished`."""
        if self._retraining_since is not None:
            raise RuntimeError("a retraining is already running: one at a time")
        self._retraining_since = self._clock() if now is None else now
        self._retraining["started"] += 1

    def retraining_finished(self, ok: bool, now: float | None = None) -> None:
        """The retraining ended (``ok``: it ran to the end, whatever it registered).

        Either way the detectors re-arm. After success the streaks restart, so a new trigger
        needs ``hysteresis_count`` fresh evaluations (and the cooldown); after a failure they
        are kept, so a drift still there triggers again once ``cooldown_s`` has passed since
        the failure. Calling it without `retraining_started` (the launch failed) is allowed.
        """
        now = self._clock() if now is None else now
        self._retraining_since = None
        if ok:
            self._retraining["succeeded"] += 1
            for det in self._detectors.values():
                det.armed, det.streak = True, 0
        else:
            self._retraining["failed"] += 1
            self._last_failure_ts = now
            for det in self._detectors.values():
                det.armed = True

    # ---- data out ------------------------------------------------------------------------
    def labelled_since(self, version: str, since: float) -> tuple[int, int]:
        """(labelled rows, correct rows) of ``version`` whose label arrived at or after
        ``since``: the accuracy evidence the canary analysis compares between versions.
        Rows of requests that pinned their version are left out: a caller who picks the
        version must not pick the evidence too."""
        v = self._versions.get(str(version))
        if v is None:
            return 0, 0
        items = [it for it in v.labels.items() if it.ts >= since and not it.pinned]
        return len(items), sum(1 for it in items if it.correct)

    def abs_errors_since(self, version: str, since: float) -> list[float]:
        """``|prediction - label|`` of ``version``'s labelled rows whose label arrived at or
        after ``since`` (rows with numeric prediction and label; pinned requests left out, as
        in `labelled_since`): the evidence the canary analysis compares for regressors."""
        v = self._versions.get(str(version))
        if v is None:
            return []
        items = (it for it in v.labels.items() if it.ts >= since and not it.pinned)
        return [e for e in (it.abs_error for it in items) if e is not None]

    def labelled_feedback(self, version: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Recent labelled rows ``(X, y)``, oldest first, for retraining.

        With ``version`` None: the rows of every version with the champion's feature count
        (what a label says about a row does not depend on which model predicted it).
        """
        if version is not None:
            v = self._versions.get(str(version))
            items = v.labels.items() if v else []
        else:
            items = self._labelled_items()
        return self._matrix(items)

    def _labelled_items(self) -> list[Labelled]:
        items = [it for v in self._versions.values() for it in v.labels.items()]
        width = self._champion_width()
        if width is not None:
            items = [it for it in items if len(it.features) == width]
        items.sort(key=lambda it: it.ts)
        return items

    def _matrix(self, items: Sequence[Labelled]) -> tuple[np.ndarray, np.ndarray]:
        if not items:
            return np.empty((0, self._champion_width() or 0)), np.empty(0)
        X = np.vstack([it.features for it in items])
        return X, np.asarray([it.label for it in items])

    def labelled_after_drop(
        self, min_segment: int = 20, alpha: float = 0.01
    ) -> tuple[np.ndarray, np.ndarray, ChangePoint]:
        """`labelled_feedback` of every version, cut where the champion got worse: where its
        accuracy dropped (`accuracy_change_point`), or, for a regressor, where its absolute
        errors rose (`error_change_point`), on the champion's own time-ordered labelled rows
        (a rolled-back challenger's worse rows would blur the change). Every version's rows
        from that moment on are kept. After a concept change the labels from before it
        describe the old concept and would teach it back. Uncut when no significant change
        is found; the returned point's ``index`` is the number of rows dropped."""
        items = self._labelled_items()
        champ = self._versions.get(self._champion) if self._champion else None
        own = sorted(champ.labels.items(), key=lambda it: it.ts) if champ is not None else []
        if not own:
            own = items
        errors = [it.abs_error for it in own]
        if champ is not None and champ.regression and all(e is not None for e in errors):
            cp = error_change_point(errors, min_segment, alpha)
        else:
            cp = accuracy_change_point([it.correct for it in own], min_segment, alpha)
        if cp.index == 0:
            return (*self._matrix(items), replace(cp, n=len(items)))
        since = own[cp.index].ts
        kept = [it for it in items if it.ts >= since]
        return (*self._matrix(kept), replace(cp, index=len(items) - len(kept), n=len(items)))

    def _champion_width(self) -> int | None:
        v = self._versions.get(self._champion) if self._champion else None
        if v is None:
            return None
        if v.reference is not None:
            return v.reference.shape[1]
        return v.rows.n_features

    def last_report(self) -> DriftReport | None:
        """The report of the latest `evaluate`."""
        return self._last_report

    def status(self) -> dict[str, Any]:
        """JSON-ready state for the actor's status route and metrics.

        Top level: ``champion``; ``features`` (name -> ``ks``, ``ks_p_value``, ``psi``,
        ``flagged`` from the latest evaluation); ``accuracy`` and ``n_labelled`` (champion
        window); ``detectors`` (name -> fired on the latest evaluation); ``hysteresis``
        (name -> armed, streak, over); ``last_trigger`` (ts, detectors, reason, numbers);
        ``retraining``; per-``versions`` counts; ``records``, ``feedback`` and
        ``request_index`` counters; ``last_evaluation`` (the full `DriftReport`).
        """
        rep = self._last_report
        versions = {}
        for name, v in self._versions.items():
            labelled = len(v.labels)
            errors = [e for e in (it.abs_error for it in v.labels.items()) if e is not None]
            regression = {
                "window_rmse": float(np.sqrt(np.mean(np.square(errors)))) if errors else None,
                "window_mae": float(np.mean(errors)) if errors else None,
                "baseline_rmse": v.baseline_rmse,
            }
            versions[name] = {
                "task": v.task,
                "records": v.records,
                "errors": v.errors,
                "rows_seen": v.rows.total,
                "window_rows": len(v.rows),
                "labelled_seen": v.labels.total,
                "window_labelled": labelled,
                "window_accuracy": (
                    v.labels.correct() / labelled if labelled and not v.regression else None
                ),
                "has_reference": v.reference is not None,
                "baseline_accuracy": v.baseline_accuracy,
                "window_sources": v.labels.sources(),
                **(regression if v.regression else {}),
            }
        champ = versions.get(self._champion) if self._champion else None
        cv = self._versions.get(self._champion) if self._champion else None
        features = {}
        if rep is not None:
            for f in rep.features:
                features[f.name] = {
                    "ks": f.ks_statistic,
                    "ks_p_value": f.ks_p_value,
                    "psi": f.psi,
                    "flagged": f.ks_flagged or f.psi_flagged,
                }
        return {
            "champion": self._champion,
            "reference_source": cv.reference_source if cv else None,
            "reference_collecting": (
                f"collecting reference ({cv.live_collected} of {cv.live_target} rows)"
                if cv is not None and cv.collecting
                else None
            ),
            "features": features,
            "accuracy": champ["window_accuracy"] if champ else None,
            "rmse": champ.get("window_rmse") if champ else None,
            "n_labelled": champ["window_labelled"] if champ else 0,
            "detectors": {d: bool(rep and rep.fired.get(d)) for d in DETECTORS},
            "hysteresis": {d: s.to_dict() for d, s in self._detectors.items()},
            "last_trigger": self._last_trigger,
            "retraining": {
                "running_since": self._retraining_since,
                "last_failure_ts": self._last_failure_ts,
                **self._retraining,
            },
            "versions": versions,
            "records": dict(self._records),
            "feedback": dict(self._feedback),
            "feedback_sources": {k: dict(v) for k, v in self._sources.items()},
            "early_labels": {
                "entries": len(self._early),
                "bytes": self._early_bytes,
                "max_entries": self.cfg.feedback_grace_items,
                "max_bytes": self.cfg.feedback_grace_bytes,
            },
            "request_index": {
                "entries": len(self._index),
                "rows": self._index.rows,
                "max_rows": self._index.max_rows,
                "evicted": self._index.evicted,
                "expired": self._index.expired,
            },
            "last_evaluation": None if rep is None else rep.to_dict(),
        }


def _finite(X: np.ndarray, strings: frozenset[int]) -> bool:
    """Whether every numeric cell of ``X`` is finite (string columns are NaN by design)."""
    if not strings:
        return bool(np.isfinite(X).all())
    return bool(np.isfinite(np.delete(X, sorted(strings), axis=1)).all())


def _per_row(raw: Any, rows: int) -> list[Any]:
    """A record's predictions as one entry per row: a list of ``rows`` entries is taken as
    it is (an entry may be a list or a dict: a pyfunc's row), anything else is flattened."""
    if isinstance(raw, (list, tuple)) and len(raw) == rows:
        return list(raw)
    return list(np.asarray(raw, dtype=object).ravel())
