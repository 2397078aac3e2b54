"""Drift statistics: pure functions over numpy arrays (scipy for the distributions).

No Ray, no I/O, no state. `monitoring.core.DriftMonitorCore` keeps the windows and the trigger
logic and calls `drift_report` on each evaluation.

Detectors, each answering "is the live data different from what the model was trained on?":

- **KS**: two-sample Kolmogorov-Smirnov per feature (reference sample vs window), with a
  Bonferroni correction so that ``alpha`` bounds the chance that *any* feature is flagged on
  stationary data.
- **PSI**: Population Stability Index per feature, a magnitude (not a test), with the usual
  reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
- **Chi-square**: predicted-class counts in the window against the reference class
  proportions.
- **Accuracy**: windowed accuracy on labelled feedback against the accuracy recorded at
  registration, one-sided exact binomial test.

Chi-square and accuracy are for classifiers. A regressor's predictions are numbers, so its
two detectors are:

- **Prediction KS** (``prediction_ks``): two-sample KS of the predicted values in the window
  against reference predictions (the model's own predictions on the reference sample, or
  the first live predictions when none were logged).
- **Error** (``error``): the live mean squared error on labelled rows against the MSE recorded
  at registration (``test_rmse`` squared), one-sided t-test on the squared errors with a
  relative tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import special as sps_special
from scipy import stats as sps

DETECTORS = ("ks", "psi", "chi2", "accuracy", "prediction_ks", "error")
CLASSIFICATION_ONLY = ("chi2", "accuracy")
REGRESSION_ONLY = ("prediction_ks", "error")
PSI_EPSILON = 1e-4

ChiSquareMethod = Literal["homogeneity", "goodness_of_fit"]


# ---- per-feature tests ---------------------------------------------------------------------
def _as_2d(a: np.ndarray | Sequence, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows x features), got {arr.ndim}-D")
    return arr


def ks_per_feature(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample KS statistic and two-sided p-value for each column (``scipy.stats.ks_2samp``).

    ``reference`` and ``current`` are (rows x features) with the same number of columns; the
    row counts may differ. Returns ``(statistics, p_values)``, one entry per feature.
    """
    ref, cur = _as_2d(reference, "reference"), _as_2d(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"feature count differs: reference {ref.shape[1]}, current {cur.shape[1]}")
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("ks_per_feature needs at least one row on each side")
    res = sps.ks_2samp(ref, cur, axis=0)
    return np.atleast_1d(res.statistic).astype(float), np.atleast_1d(res.pvalue).astype(float)


def bonferroni_flags(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Flag feature ``i`` when ``p_i < alpha / n_features``.

    This keeps the family-wise false-alarm rate (any feature flagged while nothing drifted)
    at most ``alpha`` per evaluation, whatever the dependence between features.
    """
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return np.zeros(0, dtype=bool)
    return p < alpha / p.size


def psi(
    reference_col: np.ndarray, current_col: np.ndarray, bins: int = 10, eps: float = PSI_EPSILON
) -> float:
    """Population Stability Index of one feature.

    Bins are the ``bins``-quantiles of the reference (so each holds about ``1/bins`` of the
    reference); the outer bins are open so current values outside the reference range still
    count. With ``r_i`` and ``c_i`` the reference and current shares of bin ``i``, both
    floored at ``eps`` so an empty bin gives a large but finite term::

        PSI = sum_i (c_i - r_i) * ln(c_i / r_i)

    Tied reference values (discrete features) merge quantile edges, giving fewer bins.
    PSI is biased upwards by sampling noise, about ``(bins - 1) * (1/n_ref + 1/n_cur)``, so
    thresholds assume windows of a few hundred rows or more.
    """
    ref = np.asarray(reference_col, dtype=float).ravel()
    cur = np.asarray(current_col, dtype=float).ravel()
    if ref.size == 0 or cur.size == 0:
        raise ValueError("psi needs at least one value on each side")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # side="right": a value equal to an edge goes to the bin above, as np.digitize does.
    r = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1)
    c = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1)
    r_share = np.maximum(r / ref.size, eps)
    c_share = np.maximum(c / cur.size, eps)
    return float(np.sum((c_share - r_share) * np.log(c_share / r_share)))


def psi_per_feature(
    reference: np.ndarray, current: np.ndarray, bins: int = 10, eps: float = PSI_EPSILON
) -> np.ndarray:
    """`psi` of each column of ``reference`` vs the same column of ``current``."""
    ref, cur = _as_2d(reference, "reference"), _as_2d(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"feature count differs: reference {ref.shape[1]}, current {cur.shape[1]}")
    return np.array([psi(ref[:, j], cur[:, j], bins, eps) for j in range(ref.shape[1])])


# ---- predicted classes ---------------------------------------------------------------------
@dataclass
class ChiSquareResult:
    """Predicted-class distribution in the window vs the reference.

    ``effect`` is the total-variation distance between the two class distributions (half the
    sum of absolute share differences, 0..1): a size, where the p-value is only evidence.
    """

    statistic: float
    p_value: float
    dof: int
    classes: list[Any]
    observed: list[int]
    expected: list[float]
    reference_shares: list[float]
    current_shares: list[float]
    effect: float
    method: str


def class_counts(labels: Sequence[Hashable], classes: Sequence[Hashable]) -> np.ndarray:
    """Counts of each of ``classes`` in ``labels`` (labels outside ``classes`` are ignored)."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros(len(classes), dtype=np.int64)
    for label in labels:
        i = index.get(label)
        if i is not None:
            out[i] += 1
    return out


def _category_counts(
    reference: Sequence[Hashable] | dict[Hashable, float],
    current: Sequence[Hashable],
    classes: Sequence[Hashable],
) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """Reference and current counts over ``classes`` plus any class seen on one side only."""
    cats = list(classes)
    ref_labels = list(reference) if isinstance(reference, dict) else list(dict.fromkeys(reference))
    cats += [c for c in ref_labels if c not in cats]
    cats += [c for c in dict.fromkeys(current) if c not in cats]
    if isinstance(reference, dict):
        ref = np.array([float(reference.get(c, 0.0)) for c in cats])
    else:
        ref = class_counts(list(reference), cats).astype(float)
    return cats, ref, class_counts(list(current), cats).astype(float)


def chi_square_classes(
    reference: Sequence[Hashable] | dict[Hashable, float],
    current: Sequence[Hashable],
    classes: Sequence[Hashable],
    method: ChiSquareMethod = "goodness_of_fit",
    smoothing: float = 0.5,
) -> ChiSquareResult:
    """Chi-square test of the current predicted-class counts against the reference.

    ``reference`` is either labels (one per reference row) or counts as ``{class: count}``.
    Categories are ``classes`` plus any class seen on only one side, so an unexpected live
    class raises the statistic instead of being dropped, and a class the window never
    predicts counts as observed 0.

    - ``goodness_of_fit``: ``scipy.stats.chisquare(observed, expected)`` with
      ``expected = n_current * reference shares``. Reference shares use additive smoothing
      (``(count + smoothing) / (n + smoothing * k)``) so a class absent from the reference
      has a small non-zero expectation instead of an infinite statistic. This treats the
      reference shares as exact, which they are not when the reference is itself a sample of
      a few hundred rows: then it over-fires.
    - ``homogeneity``: the 2 x k contingency test (reference counts vs current counts,
      ``scipy.stats.chi2_contingency`` without continuity correction), which accounts for the
      sampling noise on both sides; classes absent from both sides are dropped.
    """
    cats, ref, cur = _category_counts(reference, current, classes)
    n_cur = cur.sum()
    if n_cur <= 0:
        raise ValueError("chi_square_classes needs at least one current label")
    if ref.sum() <= 0:
        raise ValueError("chi_square_classes needs reference counts")
    k = len(cats)
    ref_shares_raw = ref / ref.sum()
    cur_shares = cur / n_cur
    effect = 0.5 * float(np.abs(cur_shares - ref_shares_raw).sum())
    if method == "goodness_of_fit":
        shares = (ref + smoothing) / (ref.sum() + smoothing * k)
        expected = n_cur * shares
        if k < 2:
            stat, p = 0.0, 1.0
        else:
            res = sps.chisquare(cur, expected)
            stat, p = float(res.statistic), float(res.pvalue)
        dof = max(k - 1, 0)
    elif method == "homogeneity":
        keep = (ref + cur) > 0
        table = np.vstack([ref[keep], cur[keep]])
        if table.shape[1] < 2:
            stat, p, dof = 0.0, 1.0, 0
            expected = cur.copy()
        else:
            res = sps.chi2_contingency(table, correction=False)
            stat, p, dof = float(res.statistic), float(res.pvalue), int(res.dof)
            expected = np.zeros(k)
            expected[keep] = res.expected_freq[1]
    else:
        raise ValueError(f"method must be 'homogeneity' or 'goodness_of_fit', got {method!r}")
    return ChiSquareResult(
        statistic=stat,
        p_value=p,
        dof=dof,
        classes=list(cats),
        observed=[int(x) for x in cur],
        expected=[float(x) for x in expected],
        reference_shares=[float(x) for x in ref_shares_raw],
        current_shares=[float(x) for x in cur_shares],
        effect=effect,
        method=method,
    )


# ---- accuracy ------------------------------------------------------------------------------
@dataclass
class AccuracyResult:
    """Windowed accuracy against the registration baseline."""

    accuracy: float
    n: int
    correct: int
    baseline: float
    null_accuracy: float
    p_value: float
    degraded: bool


def accuracy_degraded(
    correct: int, n: int, baseline: float, tolerance: float, alpha: float
) -> AccuracyResult:
    """One-sided exact binomial test: is the window accuracy significantly below
    ``baseline - tolerance``?

    H0: the live accuracy is at least ``a0 = baseline - tolerance``; H1: it is lower. With
    ``correct`` successes out of ``n`` labelled rows, ``p = P[Binomial(n, a0) <= correct]``
    and the model is degraded when ``p < alpha``. The tolerance absorbs the noise of the
    baseline itself (measured on a held-out split of a few hundred rows) and small, harmless
    drops, so only a real loss fires.
    """
    if n <= 0:
        raise ValueError("accuracy_degraded needs at least one labelled row")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n], got {correct} of {n}")
    a0 = min(max(baseline - tolerance, 0.0), 1.0)
    p = float(sps.binom.cdf(correct, n, a0))
    return AccuracyResult(
        accuracy=correct / n,
        n=int(n),
        correct=int(correct),
        baseline=float(baseline),
        null_accuracy=a0,
        p_value=p,
        degraded=p < alpha,
    )


# ---- regression ----------------------------------------------------------------------------
@dataclass
class PredictionKSResult:
    """Predicted values in the window vs the reference predictions (two-sample KS)."""

    statistic: float
    p_value: float
    n_reference: int
    n_current: int
    reference_mean: float
    current_mean: float
    reference_source: str


def prediction_ks(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    reference_source: str = "reference sample",
) -> PredictionKSResult:
    """``scipy.stats.ks_2samp`` of the current predicted values against the reference ones."""
    ref = np.asarray(reference, dtype=float).ravel()
    cur = np.asarray(current, dtype=float).ravel()
    if ref.size == 0 or cur.size == 0:
        raise ValueError("prediction_ks needs at least one value on each side")
    res = sps.ks_2samp(ref, cur)
    return PredictionKSResult(
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        n_reference=int(ref.size),
        n_current=int(cur.size),
        reference_mean=float(ref.mean()),
        current_mean=float(cur.mean()),
        reference_source=reference_source,
    )


@dataclass
class ErrorResult:
    """Windowed regression error against the registration baseline."""

    rmse: float
    mae: float
    n: int
    baseline_rmse: float
    null_mse: float
    p_value: float
    degraded: bool


def error_degraded(
    abs_errors: Sequence[float] | np.ndarray, baseline_rmse: float, tolerance: float, alpha: float
) -> ErrorResult:
    """One-sided t-test: is the live mean squared error significantly above
    ``baseline_rmse**2 * (1 + tolerance)``?

    H0: E[err^2] <= m0 = baseline MSE x (1 + tolerance); H1: it is larger
    (``scipy.stats.ttest_1samp(err**2, m0, alternative="greater")``). The test is on the
    mean of the squared errors, so it compares the same quantity RMSE summarises; with a
    hundred rows or more the mean is close enough to normal for the t distribution. The
    relative tolerance absorbs the noise of the baseline (a hold-out of a few dozen rows)
    and harmless rises; only a real loss fires. A window with no spread in its squared errors
    is decided by its mean.
    """
    err = np.abs(np.asarray(abs_errors, dtype=float).ravel())
    if err.size < 2:
        raise ValueError("error_degraded needs at least two labelled rows")
    if not math.isfinite(baseline_rmse) or baseline_rmse < 0:
        raise ValueError(f"baseline_rmse must be a finite number >= 0, got {baseline_rmse}")
    sq = err**2
    m0 = baseline_rmse**2 * (1 + tolerance)
    if np.ptp(sq) == 0:
        p = 0.0 if sq.mean() > m0 else 1.0
    else:
        p = float(sps.ttest_1samp(sq, m0, alternative="greater").pvalue)
    return ErrorResult(
        rmse=float(np.sqrt(sq.mean())),
        mae=float(err.mean()),
        n=int(err.size),
        baseline_rmse=float(baseline_rmse),
        null_mse=float(m0),
        p_value=p,
        degraded=p < alpha,
    )


@dataclass
class ChangePoint:
    """Where a model got worse in a time-ordered run of labelled rows: accuracy dropped
    (`accuracy_change_point`) or a regressor's errors rose (`error_change_point`).

    ``index`` is the first row after the change (0 when no significant change was found);
    ``before`` / ``after`` the two segments' accuracies, or mean absolute errors."""

    index: int
    n: int
    before: float | None
    after: float | None
    statistic: float
    p_value: float


def accuracy_change_point(
    correct: Sequence[bool] | np.ndarray, min_segment: int = 20, alpha: float = 0.01
) -> ChangePoint:
    """The split of a time-ordered correct / incorrect sequence where accuracy dropped.

    Maximum-likelihood change point of a Bernoulli sequence: over every split that leaves at
    least ``min_segment`` rows on each side and has the later segment less accurate, the one
    maximising the two-segment log-likelihood. Its likelihood-ratio statistic
    ``2 (LL_split - LL_one)`` is referred to chi-square with one degree of freedom, and the
    p-value multiplied by the number of candidate splits (Bonferroni: the search over splits
    would otherwise make every sequence look split). ``index`` is 0 unless ``p < alpha``.
    """
    c = np.asarray(correct, dtype=float)
    n = len(c)
    total = float(c.sum())
    none = ChangePoint(0, n, None, total / n if n else None, 0.0, 1.0)
    if n < 2 * min_segment:
        return none
    k = np.arange(min_segment, n - min_segment + 1)  # rows in the first segment
    s1 = np.cumsum(c)[k - 1]
    s2 = total - s1
    n1, n2 = k.astype(float), (n - k).astype(float)

    def ll(s, m):
        return sps_special.xlogy(s, s / m) + sps_special.xlogy(m - s, (m - s) / m)

    split = ll(s1, n1) + ll(s2, n2)
    drop = s2 / n2 < s1 / n1
    if not drop.any():
        return none
    split = np.where(drop, split, -np.inf)
    best = int(np.argmax(split))
    stat = float(2 * (split[best] - ll(total, float(n))))
    p = min(1.0, float(sps.chi2.sf(max(stat, 0.0), 1)) * len(k))
    before, after = float(s1[best] / n1[best]), float(s2[best] / n2[best])
    if p >= alpha:
        return ChangePoint(0, n, before, after, stat, p)
    return ChangePoint(int(k[best]), n, before, after, stat, p)


def error_change_point(
    errors: Sequence[float] | np.ndarray, min_segment: int = 20, alpha: float = 0.01
) -> ChangePoint:
    """The split of a time-ordered run of a regressor's absolute errors where they rose: the
    regression counterpart of `accuracy_change_point`.

    Pettitt's rank test, one-sided: ``U_t = sum over i <= t < j of sign(e_j - e_i)``, computed
    from ranks as ``t (n + 1) - 2 * (sum of the first t ranks)``; the split is the ``t`` with
    the largest ``U_t`` among those leaving ``min_segment`` rows on each side, and
    ``p ~ exp(-6 U^2 / (n^3 + n^2))``. Ranks, not a Gaussian likelihood: absolute errors are
    skewed, and after a shift that moves only part of the rows they are a mixture whose
    variance hides the rise from a test on means. ``before`` / ``after`` are the segments'
    mean absolute errors; ``index`` is 0 unless ``p < alpha``.
    """
    e = np.asarray(errors, dtype=float)
    n = len(e)
    none = ChangePoint(0, n, None, float(e.mean()) if n else None, 0.0, 1.0)
    if n < 2 * min_segment:
        return none
    ranks = sps.rankdata(e)
    t = np.arange(1, n + 1, dtype=float)
    u = t * (n + 1) - 2 * np.cumsum(ranks)  # U_t for t = 1..n
    k = np.arange(min_segment, n - min_segment + 1)  # rows in the first segment
    best = int(k[np.argmax(u[k - 1])])
    stat = float(u[best - 1])
    if stat <= 0:
        return none
    p = min(1.0, float(np.exp(-6 * stat**2 / (n**3 + n**2))))
    before, after = float(e[:best].mean()), float(e[best:].mean())
    return ChangePoint(best if p < alpha else 0, n, before, after, stat, p)


# ---- the report ----------------------------------------------------------------------------
@dataclass
class FeatureDrift:
    """Per-feature numbers of one evaluation."""

    name: str
    ks_statistic: float
    ks_p_value: float
    ks_flagged: bool
    psi: float
    psi_flagged: bool


@dataclass
class DriftReport:
    """One evaluation of one model version: numbers per detector, what fired and why.

    ``fired`` maps a detector name to True when its threshold was crossed on this window
    (before hysteresis); ``reasons`` maps each fired detector to one human-readable line;
    ``skipped`` maps a detector that did not run to why (too few rows, no reference...).
    """

    version: str | None
    ts: float
    n_reference: int = 0
    n_current: int = 0
    features: list[FeatureDrift] = field(default_factory=list)
    ks_threshold: float | None = None
    ks_min_adjusted_p: float | None = None
    psi_max: float | None = None
    chi2: ChiSquareResult | None = None
    accuracy: AccuracyResult | None = None
    prediction_ks: PredictionKSResult | None = None
    error: ErrorResult | None = None
    task: str = "classification"
    fired: dict[str, bool] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def any_fired(self) -> bool:
        """True when at least one detector fired on this window."""
        return any(self.fired.values())

    @property
    def flagged_features(self) -> list[str]:
        """Names of features flagged by KS (after Bonferroni) or over the PSI threshold."""
        return [f.name for f in self.features if f.ks_flagged or f.psi_flagged]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (no numpy types, no infinities)."""
        return _jsonable(asdict(self))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


STRING_COLUMNS = "string_columns"


def _numeric_columns(
    rep: DriftReport,
    ref: np.ndarray,
    cur: np.ndarray,
    names: list[str],
    string_columns: Collection[int],
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The numeric columns of ``ref`` and ``cur`` and their names; string (categorical)
    columns are left out of KS and PSI, which compare numbers, and the report's ``skipped``
    says so under `STRING_COLUMNS` (every column a string: KS and PSI are skipped)."""
    text = sorted(j for j in set(string_columns) if 0 <= j < ref.shape[1])
    if not text:
        return ref, cur, names
    keep = [j for j in range(ref.shape[1]) if j not in set(text)]
    skipped_names = [names[j] for j in text]
    rep.skipped[STRING_COLUMNS] = (
        f"KS and PSI skip string columns {skipped_names}: they compare numbers"
    )
    if not keep:
        rep.skipped["ks"] = rep.skipped["psi"] = "every feature is a string column"
    return ref[:, keep], cur[:, keep], [names[j] for j in keep]


def drift_report(
    *,
    version: str | None,
    ts: float,
    reference: np.ndarray | None,
    current: np.ndarray,
    feature_names: Sequence[str] | None,
    min_samples: int,
    ks_alpha: float,
    psi_threshold: float,
    psi_bins: int,
    string_columns: Collection[int] = (),
    reference_classes: Sequence[Hashable] | dict[Hashable, float] | None = None,
    current_predictions: Sequence[Hashable] = (),
    classes: Sequence[Hashable] = (),
    chi2_alpha: float = 0.01,
    chi2_min_effect: float = 0.0,
    chi2_method: ChiSquareMethod = "homogeneity",
    correct: int = 0,
    n_labelled: int = 0,
    baseline_accuracy: float | None = None,
    min_labelled: int = 1,
    accuracy_tolerance: float = 0.0,
    accuracy_alpha: float = 0.01,
    task: str = "classification",
    reference_values: Sequence[float] | np.ndarray | None = None,
    reference_values_source: str = "reference sample",
    current_values: Sequence[float] | np.ndarray = (),
    prediction_ks_alpha: float = 0.01,
    abs_errors: Sequence[float] | np.ndarray = (),
    baseline_rmse: float | None = None,
    error_tolerance: float = 0.0,
    error_alpha: float = 0.01,
) -> DriftReport:
    """Run every detector whose inputs are there and say which fired and why.

    Feature detectors (KS, PSI) and the prediction detectors (chi-square for classifiers,
    prediction KS for regressors) need ``min_samples`` rows in ``current``; the label
    detectors (accuracy, error) need ``min_labelled`` labelled rows and a baseline. Detectors
    of the other task (``task`` "regression" or not) are skipped. A detector that cannot run
    is listed in ``skipped`` with the reason, never fired.
    """
    cur = np.asarray(current, dtype=float)
    n_cur = int(cur.shape[0]) if cur.ndim == 2 else 0
    rep = DriftReport(version=version, ts=ts, n_current=n_cur, task=task)
    fired, skipped, reasons = rep.fired, rep.skipped, rep.reasons

    if reference is None or len(reference) == 0:
        skipped["ks"] = skipped["psi"] = "no reference sample for this version"
    elif n_cur < min_samples:
        skipped["ks"] = skipped["psi"] = f"{n_cur} rows in the window, need {min_samples}"
    elif np.shape(reference)[1:] != cur.shape[1:]:
        skipped["ks"] = skipped["psi"] = (
            f"window rows have {cur.shape[1:]} features, the reference {np.shape(reference)[1:]}"
        )
    else:
        ref = _as_2d(reference, "reference")
        rep.n_reference = int(ref.shape[0])
        names = list(feature_names or [f"f{j}" for j in range(ref.shape[1])])
        if len(names) != ref.shape[1]:
            names = [f"f{j}" for j in range(ref.shape[1])]
        ref, cur, names = _numeric_columns(rep, ref, cur, names, string_columns)
    if "ks" not in skipped:
        stat, p = ks_per_feature(ref, cur)
        flags = bonferroni_flags(p, ks_alpha)
        psis = psi_per_feature(ref, cur, psi_bins)
        rep.ks_threshold = ks_alpha / len(p)
        rep.ks_min_adjusted_p = float(min(1.0, p.min() * len(p)))
        rep.psi_max = float(psis.max())
        rep.features = [
            FeatureDrift(
                name=names[j],
                ks_statistic=float(stat[j]),
                ks_p_value=float(p[j]),
                ks_flagged=bool(flags[j]),
                psi=float(psis[j]),
                psi_flagged=bool(psis[j] > psi_threshold),
            )
            for j in range(len(p))
        ]
        fired["ks"] = bool(flags.any())
        if fired["ks"]:
            ks_hits = [f for f in rep.features if f.ks_flagged]
            reasons["ks"] = (
                f"KS: {len(ks_hits)} of {len(p)} features differ from the reference "
                f"(p < {ks_alpha:g}/{len(p)}): "
                + ", ".join(
                    f"{f.name} D={f.ks_statistic:.3f} p={f.ks_p_value:.2g}" for f in ks_hits
                )
            )
        fired["psi"] = bool((psis > psi_threshold).any())
        if fired["psi"]:
            psi_hits = [f for f in rep.features if f.psi_flagged]
            reasons["psi"] = f"PSI > {psi_threshold:g} on {len(psi_hits)} features: " + ", ".join(
                f"{f.name} {f.psi:.3f}" for f in psi_hits
            )

    if task == "regression":
        for d in CLASSIFICATION_ONLY:
            skipped[d] = "regression version: prediction_ks and error run instead"
        _regression_detectors(
            rep,
            min_samples=min_samples,
            reference_values=reference_values,
            reference_values_source=reference_values_source,
            current_values=current_values,
            prediction_ks_alpha=prediction_ks_alpha,
            abs_errors=abs_errors,
            baseline_rmse=baseline_rmse,
            min_labelled=min_labelled,
            error_tolerance=error_tolerance,
            error_alpha=error_alpha,
        )
        return rep
    # The regression detectors (REGRESSION_ONLY) are neither run nor listed for a classifier.
    # Only class-like predictions count (a pyfunc's dict or list per row has no class).
    preds = [p for p in current_predictions if isinstance(p, Hashable)]
    if reference_classes is None or len(reference_classes) == 0:
        skipped["chi2"] = "no reference classes for this version"
    elif len(preds) < min_samples:
        skipped["chi2"] = f"{len(preds)} predictions in the window, need {min_samples}"
    else:
        chi = chi_square_classes(reference_classes, preds, classes, method=chi2_method)
        rep.chi2 = chi
        fired["chi2"] = chi.p_value < chi2_alpha and chi.effect >= chi2_min_effect
        if fired["chi2"]:
            pairs = zip(chi.classes, chi.reference_shares, chi.current_shares, strict=True)
            shares = ", ".join(f"{c}: {r:.2f}->{s:.2f}" for c, r, s in pairs)
            reasons["chi2"] = (
                f"chi-square: predicted class shares changed (chi2={chi.statistic:.1f}, "
                f"p={chi.p_value:.2g} < {chi2_alpha:g}, distance {chi.effect:.3f}): {shares}"
            )

    if baseline_accuracy is None:
        skipped["accuracy"] = "no baseline accuracy recorded for this version"
    elif n_labelled < min_labelled:
        skipped["accuracy"] = f"{n_labelled} labelled rows, need {min_labelled}"
    else:
        acc = accuracy_degraded(
            correct, n_labelled, baseline_accuracy, accuracy_tolerance, accuracy_alpha
        )
        rep.accuracy = acc
        fired["accuracy"] = acc.degraded
        if acc.degraded:
            reasons["accuracy"] = (
                f"accuracy {acc.accuracy:.3f} on {acc.n} labelled rows is below baseline "
                f"{acc.baseline:.3f} - tolerance {accuracy_tolerance:g} "
                f"(one-sided binomial p={acc.p_value:.2g} < {accuracy_alpha:g})"
            )
    return rep


def _regression_detectors(
    rep: DriftReport,
    *,
    min_samples: int,
    reference_values: Sequence[float] | np.ndarray | None,
    reference_values_source: str,
    current_values: Sequence[float] | np.ndarray,
    prediction_ks_alpha: float,
    abs_errors: Sequence[float] | np.ndarray,
    baseline_rmse: float | None,
    min_labelled: int,
    error_tolerance: float,
    error_alpha: float,
) -> None:
    """The prediction KS and error detectors of a regression version, into ``rep``."""
    fired, skipped, reasons = rep.fired, rep.skipped, rep.reasons
    values = np.asarray(current_values, dtype=float).ravel()
    if reference_values is None or len(reference_values) == 0:
        skipped["prediction_ks"] = "no reference predictions yet for this version"
    elif values.size < min_samples:
        skipped["prediction_ks"] = f"{values.size} predictions in the window, need {min_samples}"
    else:
        res = prediction_ks(reference_values, values, reference_values_source)
        rep.prediction_ks = res
        fired["prediction_ks"] = res.p_value < prediction_ks_alpha
        if fired["prediction_ks"]:
            reasons["prediction_ks"] = (
                f"prediction KS: predicted values differ from the {res.reference_source} "
                f"(D={res.statistic:.3f}, p={res.p_value:.2g} < {prediction_ks_alpha:g}; "
                f"mean {res.reference_mean:.4g} -> {res.current_mean:.4g})"
            )
    errors = np.asarray(abs_errors, dtype=float).ravel()
    if baseline_rmse is None:
        skipped["error"] = "no baseline RMSE recorded for this version"
    elif errors.size < max(min_labelled, 2):
        skipped["error"] = f"{errors.size} labelled rows, need {max(min_labelled, 2)}"
    else:
        err = error_degraded(errors, baseline_rmse, error_tolerance, error_alpha)
        rep.error = err
        fired["error"] = err.degraded
        if err.degraded:
            reasons["error"] = (
                f"RMSE {err.rmse:.4g} on {err.n} labelled rows is above baseline "
                f"{err.baseline_rmse:.4g} x sqrt(1 + tolerance {error_tolerance:g}) "
                f"(one-sided t-test on squared errors p={err.p_value:.2g} < {error_alpha:g})"
            )
