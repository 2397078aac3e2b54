"""Canary analysis for regressors: absolute errors on feedback, one-sided Welch's t-test
(checked against scipy), and the per-version absolute errors the monitor core hands over."""

import numpy as np
import pytest
from scipy import stats

from configs import DriftConfig
from deployments.analysis import StatsSnapshot, abs_errors_worse, analyze
from monitoring.core import DriftMonitorCore

POLICY = dict(
    min_requests=100,
    error_rate_margin=0.01,
    latency_p99_factor=2.0,
    latency_p99_floor_ms=20.0,
    min_labelled=50,
    accuracy_alpha=0.05,
    task="regression",
)


def errors(seed: int, n: int, scale: float) -> list[float]:
    """Absolute errors of a regressor whose residuals have standard deviation ``scale``."""
    return np.abs(np.random.default_rng(seed).normal(0, scale, n)).tolist()


def snap(abs_errors: list[float], requests: int = 500) -> StatsSnapshot:
    return StatsSnapshot(
        requests=requests, p99_ms=10.0, labelled=len(abs_errors), abs_errors=abs_errors
    )


def test_welch_test_matches_scipy_one_sided():
    champ, chal = errors(1, 200, 10.0), errors(2, 150, 12.0)
    worse, p = abs_errors_worse(champ, chal, 0.05)
    ref = stats.ttest_ind(chal, champ, equal_var=False, alternative="greater")
    assert p == pytest.approx(ref.pvalue, rel=1e-12)
    # By hand: Welch's t and Welch-Satterthwaite degrees of freedom.
    a, b = np.asarray(chal), np.asarray(champ)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert p == pytest.approx(stats.t.sf(t, df), rel=1e-9)
    assert worse == (p < 0.05) and worse  # residual sd 12 vs 10 on 150 rows: clearly worse


def test_worse_regressor_fails_the_canary():
    v = analyze(snap(errors(1, 200, 10.0)), snap(errors(2, 150, 14.0)), **POLICY)
    assert v.outcome == "fail", v.reasons
    assert "mean absolute error" in v.reasons[0] and "Welch" in v.reasons[0]
    p = stats.ttest_ind(
        errors(2, 150, 14.0), errors(1, 200, 10.0), equal_var=False, alternative="greater"
    ).pvalue
    assert v.numbers["abs_error_p_value"] == pytest.approx(p)
    assert v.numbers["challenger"]["mae"] == pytest.approx(np.mean(errors(2, 150, 14.0)))
    assert v.numbers["challenger"]["accuracy"] is None
    assert "abs_errors" not in v.numbers["challenger"]  # summarised, not shipped row by row


def test_equal_regressor_passes():
    v = analyze(snap(errors(1, 200, 10.0)), snap(errors(2, 200, 10.0)), **POLICY)
    assert v.outcome == "pass", v.reasons
    assert v.numbers["abs_error_p_value"] > 0.05


def test_better_regressor_passes():
    v = analyze(snap(errors(1, 200, 10.0)), snap(errors(2, 200, 6.0)), **POLICY)
    assert v.outcome == "pass", v.reasons
    assert v.numbers["abs_error_p_value"] > 0.99  # one-sided: better is no evidence of worse


def test_regressor_waits_for_min_labelled_per_version():
    v = analyze(snap(errors(1, 200, 10.0)), snap(errors(2, 20, 30.0)), **POLICY)
    assert v.outcome == "inconclusive"
    assert "20 challenger and 200 champion labels of 50" in v.reasons[0]


def test_regression_without_labels_passes_on_errors_and_latency_alone():
    v = analyze(snap([]), snap([]), **POLICY)
    assert v.outcome == "pass" and "absolute errors" in v.reasons[0]


def test_constant_errors_decide_by_their_mean():
    assert abs_errors_worse([1.0] * 60, [2.0] * 60, 0.05) == (True, 0.0)
    assert abs_errors_worse([2.0] * 60, [1.0] * 60, 0.05) == (False, 1.0)
    assert abs_errors_worse([1.0], [5.0], 0.05) == (False, 1.0)  # no variance estimate


def test_classification_is_unchanged_by_default():
    """Without a task the accuracy test runs (old version info has no task key)."""
    policy = {k: v for k, v in POLICY.items() if k != "task"}
    champ = StatsSnapshot(requests=500, p99_ms=10.0, labelled=300, correct=285)
    chal = StatsSnapshot(requests=500, p99_ms=10.0, labelled=100, correct=70)
    v = analyze(champ, chal, **policy)
    assert v.outcome == "fail" and "accuracy" in v.reasons[0]


def test_monitor_core_hands_over_absolute_errors_per_version():
    """Float predictions and labels of a regression version become |pred - label|; pinned
    requests, non-numeric predictions and labels before ``since`` are left out."""
    t = [1000.0]
    core = DriftMonitorCore(DriftConfig(feedback_grace_s=0), clock=lambda: t[0])
    X = [[0.1, 0.2], [0.3, 0.4]]
    core.add_records(
        [
            {"request_id": "a", "features": X, "predictions": [10.5, 20.0], "model_version": "2"},
            {"request_id": "b", "features": X[0], "predictions": [7.25], "model_version": "2"},
            {
                "request_id": "c",
                "features": X[0],
                "predictions": [3.0],
                "model_version": "2",
                "pinned": True,
            },
            {"request_id": "d", "features": X[0], "predictions": [{"y": 1}], "model_version": "2"},
        ]
    )
    out = core.add_feedback([{"request_id": "a", "label": [12.0, 19.0]}])
    assert out["accepted"] == 1
    t[0] = 2000.0
    out = core.add_feedback(
        [
            {"request_id": "b", "label": 7.0},
            {"request_id": "c", "label": 100.0},
            {"request_id": "d", "label": 1.0},
        ]
    )
    assert out["accepted"] == 3
    assert core.abs_errors_since("2", 0.0) == pytest.approx([1.5, 1.0, 0.25])
    assert core.abs_errors_since("2", 1500.0) == pytest.approx([0.25])
    assert core.abs_errors_since("9", 0.0) == []


def test_monitor_and_controller_carry_the_regression_task_to_the_analysis():
    """The RolloutController picks the label test from the version info's task and asks
    the DriftMonitor for absolute errors of regression versions only (the deployments'
    own methods, on their real cores)."""
    import asyncio
    from types import SimpleNamespace

    from deployments.controller import RolloutController
    from monitoring.monitor import DriftMonitor

    controller_cls = RolloutController.func_or_class
    core = SimpleNamespace(rollout={"version": "2"}, champion="1", versions={})
    fake = SimpleNamespace(_core=core)
    assert controller_cls._task(fake) == "classification"  # old version info: no task key
    core.versions = {"1": {"task": "regression"}, "2": {}}
    assert controller_cls._task(fake) == "regression"  # the champion's when the canary has none
    core.versions["2"] = {"task": "classification"}
    assert controller_cls._task(fake) == "classification"

    monitor = object.__new__(DriftMonitor.func_or_class)
    monitor._stats = {}
    monitor._core = DriftMonitorCore(DriftConfig(feedback_grace_s=0), clock=lambda: 1000.0)
    monitor._core.add_records(
        [
            {
                "request_id": "a",
                "features": [[1.0], [2.0]],
                "predictions": [1.5, 4.0],
                "model_version": "2",
            }
        ]
    )
    monitor._core.add_feedback([{"request_id": "a", "label": [1.0, 1.0]}])
    out = asyncio.run(
        monitor.version_stats(["1", "2"], 0.0, {"1": "regression", "2": "regression"})
    )
    assert out["2"]["abs_errors"] == pytest.approx([0.5, 3.0]) and out["2"]["labelled"] == 2
    assert out["1"]["abs_errors"] == [] and out["1"]["labelled"] == 0
    snap = StatsSnapshot(**out["2"])
    assert snap.mae == pytest.approx(1.75)
    plain = asyncio.run(monitor.version_stats(["2"], 0.0))
    assert plain["2"]["abs_errors"] == [] and plain["2"]["labelled"] == 2
