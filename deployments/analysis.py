"""Canary analysis: per-version request statistics and the pass / fail / inconclusive verdict.

Plain Python (numpy, scipy); no Ray. The DriftMonitor keeps a `VersionStats` per version from
the records routers send (labels come from its feedback join); the RolloutController asks for
a `StatsSnapshot` since the current step began and calls `analyze`.
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

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["error_rate"] = round(self.error_rate, 6)
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
) -> Verdict:
    """Compare a challenger with the champion over the same window.

    Fail on: error rate above champion's plus ``error_rate_margin``; p99 latency above
    ``latency_p99_factor`` times the champion's (and above ``latency_p99_floor_ms``, so that
    1 ms vs 2.5 ms is not a failure); accuracy on feedback worse under a one-sided test at
    ``accuracy_alpha`` (only when both have ``min_labelled`` labels). Not enough challenger
    requests is inconclusive.
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
    labels_flowing = champion.labelled > 0 or challenger.labelled > 0
    if labels_flowing and min(champion.labelled, challenger.labelled) < min_labelled:
        # Feedback exists, so accuracy is the check that matters most: wait for it.
        return Verdict(
            "inconclusive",
            [
                f"waiting for feedback: {challenger.labelled} challenger and "
                f"{champion.labelled} champion labels of {min_labelled} needed"
            ],
            numbers,
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
