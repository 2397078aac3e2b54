"""Canary analysis: per-version request statistics and the pass / fail / inconclusive verdict.

Plain Python (numpy, scipy); no Ray. The DriftMonitor keeps a `VersionStats` per version from
the records routers send (labels come from its feedback join); the RolloutController asks for
a `StatsSnapshot` since the current step began and calls `analyze`.

The label test depends on the task of the versions (``task`` of the controller's version
info, "classification" when absent): classifiers compare accuracy (one-sided two-proportion
z-test), regressors compare absolute errors on the same `/feedback` labels (one-sided Welch's
t-test: is the challenger's mean absolute error larger than the champion's?).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps


@dataclass
class StatsSnapshot:
    """Numbers for one version over a time range."""

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    labelled: int = 0
    correct: int = 0
    shadow_rows: int = 0
    shadow_agree: int = 0
    # |prediction - label| per labelled row of a regression version (empty for classifiers).
    abs_errors: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def mae(self) -> float | None:
        """Mean absolute error on the labelled rows of a regression version."""
        return float(np.mean(self.abs_errors)) if self.abs_errors else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (absolute errors as their count and mean, not one by one)."""
        d = asdict(self)
        d.pop("abs_errors")
        d["error_rate"] = round(self.error_rate, 6)
        if self.abs_errors:
            d["accuracy"] = None
            d["mae"] = round(self.mae, 6)
            d["n_abs_errors"] = len(self.abs_errors)
        else:
            d["accuracy"] = None if self.accuracy is None else round(self.accuracy, 6)
        return d


@dataclass
class VersionStats:
    """Timestamped requests and shadow comparisons of one version, bounded to the newest
    ``capacity`` of each; labelled outcomes live in the DriftMonitor's windows."""

    capacity: int = 50_000
    requests: deque = field(default=None)  # (ts, latency_ms, is_error)
    shadow: deque = field(default=None)  # (ts, rows, agree)

    def __post_init__(self):
        self.requests = deque(maxlen=self.capacity)
        self.shadow = deque(maxlen=self.capacity)

    def add_request(self, ts: float, latency_ms: float, error: bool) -> None:
        self.requests.append((ts, latency_ms, error))

    def add_shadow(self, ts: float, rows: int, agree: int) -> None:
        self.shadow.append((ts, rows, agree))

    def since(self, ts: float) -> StatsSnapshot:
        reqs = [r for r in self.requests if r[0] >= ts]
        lat = [r[1] for r in reqs if not r[2]]
        sh = [(n, a) for t, n, a in self.shadow if t >= ts]
        return StatsSnapshot(
            requests=len(reqs),
            errors=sum(1 for r in reqs if r[2]),
            p99_ms=float(np.percentile(lat, 99)) if lat else None,
            shadow_rows=sum(n for n, _ in sh),
            shadow_agree=sum(a for _, a in sh),
        )


@dataclass
class Verdict:
    """``outcome`` is "pass", "fail" or "inconclusive"; ``reasons`` say why, with numbers."""

    outcome: str
    reasons: list[str]
    numbers: dict[str, Any]


def accuracy_worse(
    champ_correct: int, champ_n: int, chal_correct: int, chal_n: int, alpha: float
) -> tuple[bool, float]:
    """One-sided two-proportion z-test of H0: challenger accuracy >= champion accuracy.

    Returns (reject H0, p-value). With no variance at all (both perfect, or both zero) the
    test cannot reject.
    """
    p1, p2 = champ_correct / champ_n, chal_correct / chal_n
    pooled = (champ_correct + chal_correct) / (champ_n + chal_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / champ_n + 1 / chal_n))
    if se == 0:
        return False, 1.0
    z = (p2 - p1) / se
    p_value = float(sps.norm.cdf(z))
    return p_value < alpha, p_value


def abs_errors_worse(
    champ_abs: list[float] | np.ndarray, chal_abs: list[float] | np.ndarray, alpha: float
) -> tuple[bool, float]:
    """One-sided Welch's t-test of H0: challenger mean |error| <= champion mean |error|
    (``scipy.stats.ttest_ind(chal, champ, equal_var=False, alternative="greater")``).

    Returns (reject H0, p-value). Fewer than two errors on a side give no variance
    estimate: the test cannot reject. Without any spread on either side (every error equal)
    the t statistic is undefined; then a larger constant error is certain evidence, an
    equal or smaller one none.
    """
    chal = np.asarray(chal_abs, dtype=float)
    champ = np.asarray(champ_abs, dtype=float)
    if len(chal) < 2 or len(champ) < 2:
        return False, 1.0
    if np.ptp(chal) == 0 and np.ptp(champ) == 0:
        worse = bool(chal.mean() > champ.mean())
        return worse, 0.0 if worse else 1.0
    res = sps.ttest_ind(chal, champ, equal_var=False, alternative="greater")
    p_value = float(res.pvalue)
    return p_value < alpha, p_value


def _label_evidence(snap: StatsSnapshot, task: str) -> int:
    """Labelled rows a version has for the label test of ``task``."""
    return len(snap.abs_errors) if task == "regression" else snap.labelled


def analyze(
    champion: StatsSnapshot,
    challenger: StatsSnapshot,
    *,
    min_requests: int,
    error_rate_margin: float,
    latency_p99_factor: float,
    latency_p99_floor_ms: float,
    min_labelled: int,
    accuracy_alpha: float,
    task: str = "classification",
) -> Verdict:
    """Compare a challenger with the champion over the same window.

    Fail on: error rate above champion's plus ``error_rate_margin``; p99 latency above
    ``latency_p99_factor`` times the champion's (and above ``latency_p99_floor_ms``, so that
    1 ms vs 2.5 ms is not a failure); the label test at ``accuracy_alpha`` (only when both
    have ``min_labelled`` labels): accuracy worse for classifiers, absolute errors larger
    for regressors (``task`` "regression"). Not enough challenger requests is inconclusive.
    """
    numbers = {"champion": champion.to_dict(), "challenger": challenger.to_dict()}
    if challenger.requests < min_requests:
        return Verdict(
            "inconclusive",
            [f"challenger has {challenger.requests} of {min_requests} requests needed"],
            numbers,
        )
    reasons: list[str] = []
    limit = champion.error_rate + error_rate_margin
    if challenger.error_rate > limit:
        reasons.append(
            f"error rate {challenger.error_rate:.4f} > champion {champion.error_rate:.4f} "
            f"+ margin {error_rate_margin}"
        )
    if challenger.p99_ms is not None and champion.p99_ms is not None:
        bound = max(champion.p99_ms * latency_p99_factor, latency_p99_floor_ms)
        if challenger.p99_ms > bound:
            reasons.append(
                f"p99 latency {challenger.p99_ms:.1f} ms > {bound:.1f} ms "
                f"({latency_p99_factor}x champion {champion.p99_ms:.1f} ms)"
            )
    if reasons:
        # Errors and latency need no labels: fail now rather than wait for feedback.
        return Verdict("fail", reasons, numbers)
    n_champ, n_chal = _label_evidence(champion, task), _label_evidence(challenger, task)
    labels_flowing = n_champ > 0 or n_chal > 0
    if labels_flowing and min(n_champ, n_chal) < min_labelled:
        # Feedback exists, so the label test is the check that matters most: wait for it.
        return Verdict(
            "inconclusive",
            [
                f"waiting for feedback: {n_chal} challenger and "
                f"{n_champ} champion labels of {min_labelled} needed"
            ],
            numbers,
        )
    if task == "regression":
        if labels_flowing:
            reasons += _error_test(champion, challenger, accuracy_alpha, numbers)
        if reasons:
            return Verdict("fail", reasons, numbers)
        return Verdict(
            "pass", ["error rate, p99 latency and absolute errors within bounds"], numbers
        )
    if challenger.labelled >= min_labelled and champion.labelled >= min_labelled:
        worse, p = accuracy_worse(
            champion.correct,
            champion.labelled,
            challenger.correct,
            challenger.labelled,
            accuracy_alpha,
        )
        numbers["accuracy_p_value"] = p
        if worse:
            reasons.append(
                f"accuracy {challenger.accuracy:.4f} worse than champion "
                f"{champion.accuracy:.4f} (one-sided p={p:.2g} < {accuracy_alpha})"
            )
    if reasons:
        return Verdict("fail", reasons, numbers)
    return Verdict("pass", ["error rate, p99 latency and accuracy within bounds"], numbers)


def _error_test(
    champion: StatsSnapshot, challenger: StatsSnapshot, alpha: float, numbers: dict[str, Any]
) -> list[str]:
    """The regression label test: why the challenger fails it (empty: it does not)."""
    worse, p = abs_errors_worse(champion.abs_errors, challenger.abs_errors, alpha)
    numbers["abs_error_p_value"] = p
    if not worse:
        return []
    return [
        f"mean absolute error {challenger.mae:.4g} worse than champion {champion.mae:.4g} "
        f"(one-sided Welch t-test p={p:.2g} < {alpha})"
    ]
