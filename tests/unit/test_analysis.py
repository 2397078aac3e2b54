"""Canary analysis verdicts and the accuracy test, checked against scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from deployments.analysis import StatsSnapshot, VersionStats, accuracy_worse, analyze

POLICY = dict(
    min_requests=100,
    error_rate_margin=0.01,
    latency_p99_factor=2.0,
    latency_p99_floor_ms=20.0,
    min_labelled=50,
    accuracy_alpha=0.05,
)


def snap(requests=500, errors=0, p99=10.0, labelled=0, correct=0):
    return StatsSnapshot(
        requests=requests, errors=errors, p99_ms=p99, labelled=labelled, correct=correct
    )


def test_equal_versions_pass():
    v = analyze(snap(labelled=200, correct=190), snap(labelled=200, correct=188), **POLICY)
    assert v.outcome == "pass", v.reasons


def test_too_few_requests_is_inconclusive():
    v = analyze(snap(), snap(requests=99), **POLICY)
    assert v.outcome == "inconclusive" and "99 of 100" in v.reasons[0]


def test_waits_for_labels_when_feedback_flows():
    v = analyze(snap(labelled=200, correct=190), snap(labelled=10, correct=10), **POLICY)
    assert v.outcome == "inconclusive" and "waiting for feedback" in v.reasons[0]


def test_failing_requests_fail_without_waiting_for_labels():
    v = analyze(snap(labelled=200, correct=190), snap(errors=50, labelled=10), **POLICY)
    assert v.outcome == "fail" and "error rate" in v.reasons[0]


def test_error_rate_over_margin_fails():
    v = analyze(snap(errors=5), snap(errors=15), **POLICY)  # 1% vs 3%
    assert v.outcome == "fail" and "error rate" in v.reasons[0]
    assert analyze(snap(errors=5), snap(errors=9), **POLICY).outcome == "pass"  # 1.8% < 2%


def test_latency_over_factor_and_floor_fails():
    assert analyze(snap(p99=30), snap(p99=70), **POLICY).outcome == "fail"
    # 3x slower but under the floor: not a failure worth a rollback.
    assert analyze(snap(p99=2), snap(p99=6), **POLICY).outcome == "pass"


def test_clearly_worse_accuracy_fails_and_noise_does_not():
    worse = analyze(snap(labelled=300, correct=285), snap(labelled=100, correct=70), **POLICY)
    assert worse.outcome == "fail" and "accuracy" in worse.reasons[0]
    close = analyze(snap(labelled=300, correct=285), snap(labelled=100, correct=93), **POLICY)
    assert close.outcome == "pass"


def test_accuracy_test_matches_the_two_proportion_z_test():
    c1, n1, c2, n2 = 180, 200, 150, 190
    p = (c1 + c2) / (n1 + n2)
    z = (c2 / n2 - c1 / n1) / math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    reject, p_value = accuracy_worse(c1, n1, c2, n2, 0.05)
    assert p_value == pytest.approx(stats.norm.cdf(z))
    assert reject is True
    assert accuracy_worse(100, 100, 100, 100, 0.05) == (False, 1.0)


def test_version_stats_window_and_p99():
    vs = VersionStats(capacity=1000)
    rng = np.random.default_rng(0)
    lat = rng.exponential(10, size=400)
    for i, x in enumerate(lat):
        vs.add_request(ts=float(i), latency_ms=float(x), error=i % 50 == 0)
    s = vs.since(200.0)
    assert s.requests == 200 and s.errors == 4
    ok = [x for i, x in enumerate(lat) if i >= 200 and i % 50 != 0]
    assert s.p99_ms == pytest.approx(np.percentile(ok, 99))
    for i in range(2000):
        vs.add_request(ts=1e6 + i, latency_ms=1.0, error=False)
    assert len(vs.requests) == 1000  # bounded
