"""Drift statistics (monitoring.drift): equal to scipy / hand computations, quiet on stationary
data, and flagging exactly what moved. No Ray."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from monitoring.drift import (
    accuracy_change_point,
    accuracy_degraded,
    bonferroni_flags,
    chi_square_classes,
    drift_report,
    error_change_point,
    ks_per_feature,
    psi,
    psi_per_feature,
)

N_FEATURES = 8
NAMES = [f"f{j}" for j in range(N_FEATURES)]


def sample(rng: np.random.Generator, n: int) -> np.ndarray:
    """Eight features of different shapes, so no test leans on normality."""
    return np.column_stack(
        [
            rng.normal(0, 1, n),
            rng.normal(5, 2, n),
            rng.uniform(0, 1, n),
            rng.exponential(1.0, n),
            rng.lognormal(0, 0.5, n),
            rng.standard_t(5, n),
            rng.gamma(2.0, 2.0, n),
            rng.integers(0, 20, n).astype(float),  # discrete: ties in KS and PSI
        ]
    )


def predict(X: np.ndarray) -> np.ndarray:
    return (X[:, 0] + X[:, 2] - 0.5 > 0).astype(int)


def report(ref, cur, **kw):
    args = dict(
        version="1",
        ts=0.0,
        reference=ref,
        current=cur,
        feature_names=NAMES,
        min_samples=100,
        ks_alpha=0.01,
        psi_threshold=0.25,
        psi_bins=10,
        reference_classes=None if ref is None else list(predict(ref)),
        current_predictions=list(predict(cur)),
        classes=[0, 1],
        chi2_alpha=0.01,
        chi2_min_effect=0.05,
    )
    args.update(kw)
    return drift_report(**args)


# ---- equal to scipy / by hand ---------------------------------------------------------------
def test_ks_per_feature_matches_scipy_column_by_column():
    rng = np.random.default_rng(1)
    ref, cur = sample(rng, 300), sample(rng, 450)
    cur[:, 3] += 0.4
    stat, p = ks_per_feature(ref, cur)
    for j in range(N_FEATURES):
        expected = sps.ks_2samp(ref[:, j], cur[:, j])
        assert stat[j] == pytest.approx(expected.statistic, abs=1e-12)
        assert p[j] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_ks_refuses_mismatched_widths():
    with pytest.raises(ValueError, match="feature count differs"):
        ks_per_feature(np.zeros((5, 3)), np.zeros((5, 2)))


def test_bonferroni_flags_at_alpha_over_n():
    p = np.array([0.001, 0.0012, 0.05, 0.0024, 0.9])
    # alpha / n = 0.01 / 5 = 0.002
    assert bonferroni_flags(p, 0.01).tolist() == [True, True, False, False, False]
    assert bonferroni_flags(np.array([]), 0.01).size == 0


def test_psi_equals_hand_computation():
    ref = np.arange(100, dtype=float)  # deciles: 10 values per bin
    cur = np.concatenate([np.arange(0, 10, 0.2), np.arange(90, 100, 0.2)])  # 50 + 50 values
    r, c, eps = 0.1, 0.5, 1e-4
    expected = 2 * (c - r) * math.log(c / r) + 8 * (eps - r) * math.log(eps / r)
    assert psi(ref, cur, bins=10, eps=eps) == pytest.approx(expected, rel=1e-12)


def test_psi_equals_textbook_formula_on_quantile_histogram():
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, 1000)
    cur = rng.normal(0.3, 1.2, 700)
    edges = np.quantile(ref, np.linspace(0, 1, 11))
    edges[0], edges[-1] = -np.inf, np.inf  # open outer bins
    r = np.histogram(ref, edges)[0] / ref.size
    c = np.histogram(cur, edges)[0] / cur.size
    assert (r > 0).all() and (c > 0).all()
    expected = float(np.sum((c - r) * np.log(c / r)))
    assert psi(ref, cur) == pytest.approx(expected, rel=1e-9)


def test_psi_properties():
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 2000)
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert psi(ref, ref + 1.0) > psi(ref, ref + 0.3) > psi(ref, rng.normal(0, 1, 2000))
    # Values far outside the reference range land in the outer bins, finite result.
    assert math.isfinite(psi(ref, np.full(100, 1e6)))
    # A constant reference column still gives a finite number.
    assert math.isfinite(psi(np.ones(100), rng.normal(0, 1, 100)))
    both = psi_per_feature(np.column_stack([ref, ref]), np.column_stack([ref, ref + 1]))
    assert both[0] == pytest.approx(0.0, abs=1e-12) and both[1] > 0.25


def test_chi_square_goodness_of_fit_matches_scipy_chisquare():
    ref_labels = ["a"] * 300 + ["b"] * 150 + ["c"] * 50
    cur = ["a"] * 100 + ["b"] * 120 + ["c"] * 30
    res = chi_square_classes(ref_labels, cur, ["a", "b", "c"], method="goodness_of_fit")
    k, s = 3, 0.5
    shares = (np.array([300, 150, 50]) + s) / (500 + s * k)
    expected = sps.chisquare([100, 120, 30], 250 * shares)
    assert res.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert res.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert res.observed == [100, 120, 30] and res.dof == 2
    # Without smoothing it is exactly chisquare against n * reference shares.
    raw = chi_square_classes(ref_labels, cur, ["a", "b", "c"], "goodness_of_fit", smoothing=0)
    plain = sps.chisquare([100, 120, 30], 250 * np.array([0.6, 0.3, 0.1]))
    assert raw.statistic == pytest.approx(plain.statistic, rel=1e-12)
    assert raw.p_value == pytest.approx(plain.pvalue, rel=1e-9)
    assert res.effect == pytest.approx(0.5 * (0.2 + 0.18 + 0.02))


def test_chi_square_homogeneity_matches_scipy_contingency():
    ref_counts = {0: 320, 1: 180}
    cur = [0] * 210 + [1] * 190
    res = chi_square_classes(ref_counts, cur, [0, 1], method="homogeneity")
    expected = sps.chi2_contingency([[320, 180], [210, 190]], correction=False)
    assert res.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert res.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert res.expected == pytest.approx(list(expected.expected_freq[1]))
    # Labels and counts describe the same reference.
    same = chi_square_classes([0] * 320 + [1] * 180, cur, [0, 1], method="homogeneity")
    assert same.statistic == pytest.approx(res.statistic)


def test_chi_square_handles_classes_absent_on_one_side():
    ref = [0] * 250 + [1] * 250
    # Class 2 is declared but never seen in the reference nor predicted: no effect, no NaN.
    quiet = chi_square_classes(ref, [0] * 100 + [1] * 100, [0, 1, 2], "goodness_of_fit")
    assert quiet.p_value > 0.5 and math.isfinite(quiet.statistic)
    homog = chi_square_classes(ref, [0] * 100 + [1] * 100, [0, 1, 2], "homogeneity")
    assert homog.dof == 1 and homog.p_value == pytest.approx(1.0)
    # A class only the window predicts (unknown to the reference): finite and it fires.
    for method in ("goodness_of_fit", "homogeneity"):
        odd = chi_square_classes(ref, [0] * 80 + [1] * 80 + [7] * 40, [0, 1], method)
        assert 7 in odd.classes and math.isfinite(odd.statistic) and odd.p_value < 1e-6
    # A reference class the window never predicts: observed 0, fires.
    gone = chi_square_classes(ref, [0] * 200, [0, 1], "homogeneity")
    assert gone.observed == [200, 0] and gone.p_value < 1e-6 and gone.effect == pytest.approx(0.5)


def test_accuracy_test_is_one_sided_exact_binomial():
    res = accuracy_degraded(correct=160, n=200, baseline=0.95, tolerance=0.05, alpha=0.01)
    expected = sps.binomtest(160, 200, 0.90, alternative="less").pvalue
    assert res.p_value == pytest.approx(expected, rel=1e-9)
    assert res.degraded and res.accuracy == 0.8 and res.null_accuracy == pytest.approx(0.9)
    # Within tolerance, or better than baseline: never degraded.
    assert not accuracy_degraded(180, 200, 0.95, 0.05, 0.01).degraded
    assert not accuracy_degraded(200, 200, 0.95, 0.05, 0.01).degraded
    # A small window cannot prove much: 7/10 is not significant against 0.9.
    assert not accuracy_degraded(7, 10, 0.95, 0.05, 0.01).degraded


# ---- behaviour on data ------------------------------------------------------------------------
def test_stationary_windows_rarely_fire_and_never_three_in_a_row():
    """200 independent windows drawn from the reference distribution: with Bonferroni each
    detector's family-wise false-alarm rate is about alpha (1%) per window, so a handful of
    single firings at most and never three consecutive ones (what the trigger needs)."""
    rng = np.random.default_rng(20240601)
    ref = sample(rng, 500)
    fired = {"ks": [], "psi": [], "chi2": []}
    for _ in range(200):
        cur = sample(rng, 500)
        rep = report(ref, cur)
        assert set(rep.skipped) == {"accuracy"}  # no labels here; see the accuracy tests
        for d in fired:
            fired[d].append(rep.fired[d])
    for d, seq in fired.items():
        assert sum(seq) <= 6, f"{d} fired {sum(seq)} times in 200 stationary windows"
        runs = max((len(r) for r in "".join("x" if f else "." for f in seq).split(".")), default=0)
        assert runs < 3, f"{d} fired {runs} windows in a row on stationary data"
    assert not any(fired["psi"])  # PSI noise at 500 vs 500 rows is ~0.04, far below 0.25


def test_shifted_features_are_exactly_the_flagged_ones():
    rng = np.random.default_rng(7)
    ref = sample(rng, 500)
    cur = sample(rng, 500)
    shifted = [1, 5]
    for j in shifted:
        cur[:, j] += ref[:, j].std()  # one standard deviation
    rep = report(ref, cur)
    assert [f.name for f in rep.features if f.ks_flagged] == ["f1", "f5"]
    assert [f.name for f in rep.features if f.psi_flagged] == ["f1", "f5"]
    assert rep.fired["ks"] and rep.fired["psi"]
    assert "f1" in rep.reasons["ks"] and "f5" in rep.reasons["ks"]
    assert rep.flagged_features == ["f1", "f5"]
    assert rep.ks_threshold == pytest.approx(0.01 / N_FEATURES)
    json.dumps(rep.to_dict())


def test_chi_square_fires_when_predicted_class_shares_change():
    rng = np.random.default_rng(11)
    ref = sample(rng, 500)
    cur = sample(rng, 500)
    base = list(predict(cur))
    assert not report(ref, cur, current_predictions=base).fired["chi2"]
    # Same rows, but the model now answers 1 far more often (70% vs about 40%).
    skewed = [1 if rng.random() < 0.7 else 0 for _ in base]
    rep = report(ref, cur, current_predictions=skewed)
    assert rep.fired["chi2"] and rep.chi2.p_value < 1e-4 and rep.chi2.effect > 0.1
    assert "class shares changed" in rep.reasons["chi2"]


def test_chi_square_effect_floor_ignores_tiny_significant_differences():
    ref = [0] * 5000 + [1] * 5000
    cur = [0] * 9600 + [1] * 10400  # p ~ 1e-5 on 20000 rows but a 2-point move
    rep = drift_report(
        version="1",
        ts=0,
        reference=None,
        current=np.zeros((20000, 1)),
        feature_names=None,
        min_samples=10,
        ks_alpha=0.01,
        psi_threshold=0.25,
        psi_bins=10,
        reference_classes=ref,
        current_predictions=cur,
        classes=[0, 1],
        chi2_min_effect=0.05,
    )
    assert rep.chi2.p_value < 0.01 and not rep.fired["chi2"]


def _labels_with_concept_shift(X: np.ndarray, rng: np.random.Generator, shift: bool):
    truth = predict(X)
    noisy = np.where(rng.random(len(X)) < 0.03, 1 - truth, truth)  # 97% accurate model
    if shift:
        region = X[:, 1] > 6.0  # about 30% of rows: the concept flipped there
        noisy = np.where(region, 1 - noisy, noisy)
    return truth, noisy


@pytest.mark.parametrize("shift", [False, True])
def test_accuracy_detector_fires_on_concept_shift_only(shift):
    rng = np.random.default_rng(5)
    fired = 0
    for _ in range(50):
        X = sample(rng, 300)
        pred, label = _labels_with_concept_shift(X, rng, shift)
        rep = report(
            X,
            X,
            correct=int((pred == label).sum()),
            n_labelled=len(X),
            baseline_accuracy=0.96,
            min_labelled=100,
            accuracy_tolerance=0.05,
            accuracy_alpha=0.01,
        )
        fired += rep.fired["accuracy"]
    assert fired == (50 if shift else 0)


def test_detectors_that_cannot_run_are_skipped_with_a_reason():
    rng = np.random.default_rng(0)
    ref = sample(rng, 500)
    rep = report(ref, sample(rng, 50), n_labelled=5, baseline_accuracy=0.9, min_labelled=100)
    assert set(rep.skipped) == {"ks", "psi", "chi2", "accuracy"}
    assert "need 100" in rep.skipped["ks"] and not rep.any_fired
    rep = report(None, sample(rng, 500), reference_classes=None, current_predictions=[0] * 500)
    assert "no reference" in rep.skipped["ks"] and "no reference" in rep.skipped["chi2"]
    assert "baseline" in rep.skipped["accuracy"]
    rep = report(ref, sample(rng, 500)[:, :5])
    assert "features" in rep.skipped["ks"]


# ---- where accuracy dropped ---------------------------------------------------------------------
def _bernoulli_ll(c: np.ndarray) -> float:
    p = c.mean()
    return float(sps.bernoulli.logpmf(c, p).sum()) if 0 < p < 1 else 0.0


def test_change_point_finds_the_drop_and_its_statistic_matches_scipy():
    rng = np.random.default_rng(7)
    c = np.concatenate([rng.random(300) < 0.97, rng.random(200) < 0.55]).astype(int)
    cp = accuracy_change_point(c)
    assert abs(cp.index - 300) <= 15, cp
    assert cp.before > 0.9 and cp.after < 0.7 and cp.p_value < 1e-6
    k = cp.index
    expected = 2 * (_bernoulli_ll(c[:k]) + _bernoulli_ll(c[k:]) - _bernoulli_ll(c))
    assert cp.statistic == pytest.approx(expected, rel=1e-9)


def test_change_point_stays_at_zero_on_stationary_rows_and_on_a_rise():
    fired = 0
    for seed in range(100):
        c = np.random.default_rng(seed).random(400) < 0.9
        fired += accuracy_change_point(c).index > 0
    assert fired <= 3  # alpha = 0.01 after Bonferroni: at most a rare false alarm
    rng = np.random.default_rng(1)
    rise = np.concatenate([rng.random(200) < 0.5, rng.random(200) < 0.97])
    assert accuracy_change_point(rise).index == 0  # accuracy went up, not down
    assert accuracy_change_point([True, False] * 10).index == 0  # too short to split


# ---- where a regressor's errors rose -----------------------------------------------------------
def test_error_change_point_finds_the_rise_and_its_statistic_is_pettitts():
    rng = np.random.default_rng(3)
    # Absolute errors of a regressor with RMSE about 55, then of the same model after the
    # target moved by 60 for half the rows: a mixture, as in `make demo DEMO_TASK=regression`.
    before = np.abs(rng.normal(0, 55, 250))
    after = np.abs(rng.normal(0, 55, 150) + np.where(rng.random(150) < 0.5, 60, 0))
    e = np.concatenate([before, after])
    cp = error_change_point(e)
    assert abs(cp.index - 250) <= 25, cp
    assert cp.before < 50 < cp.after and cp.p_value < 1e-3
    # U_t by its definition, O(n^2): sum over i <= t < j of sign(e_j - e_i).
    k = cp.index
    assert cp.statistic == pytest.approx(np.sign(e[k:][None, :] - e[:k][:, None]).sum())
    n = len(e)
    assert cp.p_value == pytest.approx(math.exp(-6 * cp.statistic**2 / (n**3 + n**2)))


def test_error_change_point_stays_at_zero_on_stationary_errors_and_on_a_fall():
    fired = 0
    for seed in range(100):
        e = np.abs(np.random.default_rng(seed).normal(0, 55, 400))
        fired += error_change_point(e).index > 0
    assert fired <= 3  # half-normal errors: Bonferroni keeps false alarms rare
    rng = np.random.default_rng(1)
    fall = np.concatenate([np.abs(rng.normal(0, 90, 200)), np.abs(rng.normal(0, 40, 200))])
    assert error_change_point(fall).index == 0  # errors went down: nothing to cut
    assert error_change_point([1.0, 2.0] * 10).index == 0  # too short to split
