"""Drift detection for a regression champion: KS on predicted values, the error test against
the registration RMSE (both checked against scipy), the first-live-window reference, and
records whose predictions are not class labels. Plain Python with an injected clock."""

import numpy as np
import pytest
from scipy import stats

from configs import DriftConfig
from monitoring.core import DriftMonitorCore
from monitoring.drift import drift_report, error_degraded, prediction_ks

W = np.array([3.0, -2.0, 1.0])
NAMES = ["a", "b", "c"]
NOISE = 10.0  # residual sd: the registration RMSE of this "model"


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def model(X: np.ndarray) -> np.ndarray:
    return 100.0 + 20.0 * X @ W


def make_core(clock: Clock, **overrides) -> DriftMonitorCore:
    cfg = dict(
        feedback_grace_s=0,
        window_size=500,
        label_window_size=500,
        min_samples=200,
        min_labelled=100,
        min_new_samples=100,
        min_new_labels=25,
        hysteresis_count=3,
        cooldown_s=600,
        prediction_reference_rows=300,
    )
    cfg.update(overrides)
    return DriftMonitorCore(DriftConfig(**cfg), clock=clock)


class Traffic:
    """Seeded requests to a regression version, and their labels."""

    def __init__(self, core: DriftMonitorCore, seed: int, version: str = "1"):
        self.core, self.version = core, version
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def send(self, rows: int, shift: float = 0.0, noise: float = NOISE, label: bool = False):
        X = self.rng.normal(size=(rows, 3))
        X[:, 0] += shift
        pred = model(X)
        records, feedback = [], []
        for i in range(0, rows, 10):
            rid = f"r{self.n}"
            self.n += 1
            records.append(
                {
                    "request_id": rid,
                    "features": X[i : i + 10].tolist(),
                    "predictions": pred[i : i + 10].tolist(),
                    "model_version": self.version,
                }
            )
            y = pred[i : i + 10] + self.rng.normal(0, noise, len(pred[i : i + 10]))
            feedback.append({"request_id": rid, "label": y.tolist()})
        assert self.core.add_records(records)["accepted"] == len(records)
        if label:
            assert self.core.add_feedback(feedback)["accepted"] == len(feedback)


def reference(core: DriftMonitorCore, seed: int = 0, predictions: bool = True, rmse=NOISE):
    X = np.random.default_rng(seed).normal(size=(2000, 3))
    core.set_reference(
        "1",
        X,
        model(X) + 5.0,  # labels: never the KS reference (their spread is not the model's)
        feature_names=NAMES,
        reference_predictions=model(X).tolist() if predictions else None,
        task="regression",
        baseline_rmse=rmse,
    )


# ---- the statistics ---------------------------------------------------------------------------
def test_prediction_ks_is_scipy_ks_2samp():
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(0, 1, 400), rng.normal(0.3, 1, 300)
    res = prediction_ks(ref, cur)
    expected = stats.ks_2samp(ref, cur)
    assert res.statistic == pytest.approx(expected.statistic)
    assert res.p_value == pytest.approx(expected.pvalue)
    assert (res.n_reference, res.n_current) == (400, 300)


def test_error_test_is_a_one_sided_t_test_on_squared_errors():
    err = np.abs(np.random.default_rng(4).normal(0, 12.0, 300))
    res = error_degraded(err, baseline_rmse=10.0, tolerance=0.2, alpha=0.01)
    expected = stats.ttest_1samp(err**2, 100.0 * 1.2, alternative="greater")
    assert res.p_value == pytest.approx(expected.pvalue)
    assert res.null_mse == pytest.approx(120.0)
    assert res.rmse == pytest.approx(np.sqrt(np.mean(err**2)))
    assert res.mae == pytest.approx(np.mean(err))
    assert res.degraded == (expected.pvalue < 0.01)


def test_error_test_fires_on_doubled_error_not_on_the_baseline_error():
    rng = np.random.default_rng(5)
    same = error_degraded(np.abs(rng.normal(0, 10.0, 300)), 10.0, 0.2, 0.01)
    worse = error_degraded(np.abs(rng.normal(0, 20.0, 300)), 10.0, 0.2, 0.01)
    assert not same.degraded and same.p_value > 0.1
    assert worse.degraded and worse.p_value < 1e-6
    with pytest.raises(ValueError, match="two labelled rows"):
        error_degraded([1.0], 10.0, 0.2, 0.01)


def test_regression_report_skips_the_classifier_detectors():
    rep = drift_report(
        version="1",
        ts=0.0,
        reference=None,
        current=np.zeros((0, 3)),
        feature_names=None,
        min_samples=10,
        ks_alpha=0.01,
        psi_threshold=0.25,
        psi_bins=10,
        reference_classes=[1, 2, 3],
        task="regression",
    )
    assert "regression version" in rep.skipped["chi2"]
    assert "regression version" in rep.skipped["accuracy"]
    assert rep.skipped["prediction_ks"] == "no reference predictions yet for this version"
    assert rep.skipped["error"] == "no baseline RMSE recorded for this version"
    assert rep.to_dict()["task"] == "regression"


# ---- the monitor core -------------------------------------------------------------------------
def test_stationary_regression_traffic_does_not_trigger():
    clock = Clock()
    core = make_core(clock)
    reference(core)
    traffic = Traffic(core, seed=1)
    fired = []
    for _ in range(6):
        traffic.send(200, label=True)
        clock.t += 30
        rep = core.evaluate()
        assert rep.prediction_ks is not None and rep.error is not None
        fired.append(rep.fired["prediction_ks"] or rep.fired["error"])
        assert rep.prediction_ks.reference_source == "reference sample's predictions"
        assert "chi2" in rep.skipped and "accuracy" in rep.skipped
    # Each test has a 1% false-alarm rate: a rare single alarm, never three in a row.
    assert sum(fired) <= 1, fired
    assert core.should_retrain()[0] is False
    status = core.status()
    assert status["versions"]["1"]["task"] == "regression"
    assert status["versions"]["1"]["window_accuracy"] is None
    assert status["rmse"] == pytest.approx(NOISE, rel=0.15)


def test_shifted_predictions_fire_prediction_ks_and_trigger():
    clock = Clock()
    core = make_core(clock, trigger_on=["prediction_ks"])
    reference(core)
    traffic = Traffic(core, seed=2)
    for _ in range(3):
        traffic.send(200, shift=1.0)
        clock.t += 30
        rep = core.evaluate()
        assert rep.fired["prediction_ks"], rep.skipped
    fire, reason, numbers = core.should_retrain()
    assert fire and numbers["detectors"] == ["prediction_ks"]
    assert "prediction KS" in reason and numbers["prediction_ks"]["p_value"] < 0.01


def test_larger_errors_fire_the_error_detector_and_trigger():
    clock = Clock()
    core = make_core(clock, trigger_on=["error"])
    reference(core)
    traffic = Traffic(core, seed=3)
    for _ in range(3):
        traffic.send(200, noise=2.5 * NOISE, label=True)
        clock.t += 30
        rep = core.evaluate()
        assert rep.fired["error"] and not rep.fired["prediction_ks"]
    fire, reason, numbers = core.should_retrain()
    assert fire and numbers["detectors"] == ["error"]
    assert "RMSE" in reason and numbers["baseline_rmse"] == NOISE
    assert numbers["rmse"] > 2 * NOISE


def test_first_live_predictions_are_the_reference_when_none_were_logged():
    clock = Clock()
    core = make_core(clock, trigger_on=["prediction_ks"])
    reference(core, predictions=False)
    traffic = Traffic(core, seed=4)
    traffic.send(200)
    rep = core.evaluate()
    assert "no reference predictions yet" in rep.skipped["prediction_ks"]
    traffic.send(100)  # 300 rows: the reference is frozen, nothing after it yet
    rep = core.evaluate()
    assert (
        rep.prediction_ks is None and "0 predictions in the window" in rep.skipped["prediction_ks"]
    )
    traffic.send(200)  # same distribution after the reference: no drift
    rep = core.evaluate()
    assert rep.prediction_ks.reference_source == "first 300 live predictions"
    assert rep.prediction_ks.n_reference == 300 and rep.prediction_ks.n_current == 200
    assert not rep.fired["prediction_ks"]
    for _ in range(3):
        traffic.send(200, shift=1.0)
        clock.t += 30
        rep = core.evaluate()
    assert rep.fired["prediction_ks"]
    assert core.should_retrain()[0] is True


def test_predictions_that_are_not_class_labels_do_not_crash_the_monitor():
    """A pyfunc's dict (or list) per row is kept, joined to feedback, and skipped by the
    prediction detectors of a classifier-like version instead of raising."""
    clock = Clock()
    core = make_core(clock, min_samples=10, min_new_samples=1)
    X = np.random.default_rng(6).normal(size=(100, 3))
    core.set_reference("1", X, [0, 1] * 50, 0.9, NAMES, [0, 1], task="other")
    records = [
        {
            "request_id": f"d{i}",
            "features": X[i : i + 2].tolist(),
            "predictions": [{"p": 0.1, "q": 2}, [1.0, 2.0]],
            "model_version": "1",
        }
        for i in range(0, 60, 2)
    ]
    assert core.add_records(records) == {
        "accepted": 30,
        "rows": 60,
        "errors": 0,
        "invalid": 0,
        "ignored": 0,
    }
    assert core.add_feedback([{"request_id": "d0", "label": [1, 0]}])["accepted"] == 1
    rep = core.evaluate()
    assert "0 predictions in the window" in rep.skipped["chi2"]
    assert "prediction_ks" not in rep.fired
    core.status()  # JSON-ready status still builds
    # A regression version with such rows: they are not numbers, so no KS on them either.
    core.set_reference("1", X, None, task="regression", reference_predictions=[1.0] * 50)
    rep = core.evaluate()
    assert "predictions in the window" in rep.skipped["prediction_ks"]
