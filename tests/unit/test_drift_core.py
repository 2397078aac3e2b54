"""DriftMonitorCore: windows, the feedback join, hysteresis, cooldown, one retraining at a time,
bounded memory. Plain Python with an injected clock; no Ray."""

import asyncio
import json

import numpy as np
import pytest
from pydantic import ValidationError

from configs import DriftConfig, load_drift_config
from monitoring.core import DriftMonitorCore, normalize_label
from tests.unit.test_drift import NAMES, predict, sample

WINDOW = 500


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_core(clock: Clock, **overrides) -> DriftMonitorCore:
    cfg = dict(
        feedback_grace_s=0,  # the early-label path has its own test
        window_size=WINDOW,
        label_window_size=WINDOW,
        min_samples=200,
        min_labelled=100,
        min_new_samples=100,
        min_new_labels=25,
        hysteresis_count=3,
        cooldown_s=600,
        request_map_rows=5000,
        request_map_ttl_s=3600,
    )
    cfg.update(overrides)
    return DriftMonitorCore(DriftConfig(**cfg), clock=clock)


class Traffic:
    """Seeded traffic for one model version: rows, predictions, request ids, labels."""

    def __init__(self, core: DriftMonitorCore, clock: Clock, seed: int, version: str = "1"):
        self.core, self.clock, self.version = core, clock, version
        self.rng = np.random.default_rng(seed)
        self.n = 0
        ref = sample(self.rng, 500)
        core.set_reference(version, ref, list(predict(ref)), 0.96, NAMES, [0, 1])

    def send(
        self, rows: int, shift: dict[int, float] | None = None, rows_per_request: int = 10
    ) -> list[tuple[str, np.ndarray, list[int]]]:
        """``rows`` predictions in multi-row records (the router's format)."""
        X = sample(self.rng, rows)
        for j, delta in (shift or {}).items():
            X[:, j] += delta
        pred = predict(X)
        records, sent = [], []
        for i in range(0, rows, rows_per_request):
            self.n += 1
            rid = f"r{self.n}"
            Xi, pi = X[i : i + rows_per_request], [int(p) for p in pred[i : i + rows_per_request]]
            records.append(
                {
                    "kind": "request",
                    "request_id": rid,
                    "features": Xi,
                    "predictions": pi,
                    "model_version": self.version,
                    "latency_ms": 3.0,
                    "error": None,
                    "ts": self.clock(),
                }
            )
            sent.append((rid, Xi, pi))
        out = self.core.add_records(records)
        assert out["accepted"] == len(records) and out["rows"] == rows
        return sent

    def label(self, sent, concept_shift: bool = False) -> dict:
        """Ground truth: the model is right 97% of the time, unless the concept shifted."""
        items = []
        for rid, Xi, pi in sent:
            truth = np.asarray(pi)
            flip = self.rng.random(len(pi)) < 0.03
            if concept_shift:
                flip ^= Xi[:, 1] > 6.0
            items.append(
                {"request_id": rid, "label": [int(v) for v in np.where(flip, 1 - truth, truth)]}
            )
        out = self.core.add_feedback(items)
        assert out["accepted"] == len(items)
        return out

    def tick(self, seconds: float = 30.0):
        self.clock.t += seconds
        rep = self.core.evaluate()
        return rep, self.core.should_retrain()


# ---- no false alarms ------------------------------------------------------------------------
def test_stationary_traffic_never_triggers_over_200_windows():
    clock = Clock()
    core = make_core(clock)
    traffic = Traffic(core, clock, seed=123)
    fired = {"ks": 0, "psi": 0, "chi2": 0, "accuracy": 0}
    for _ in range(200):
        traffic.label(traffic.send(WINDOW))  # a fresh, independent window each time
        rep, (trigger, reason, _) = traffic.tick()
        assert not rep.skipped, rep.skipped
        assert not trigger, reason
        for d in fired:
            fired[d] += rep.fired[d]
    assert core.status()["last_trigger"] is None
    # Single-window false alarms happen at about the configured 1% and are absorbed by the
    # hysteresis; the totals show the detectors really ran.
    assert fired["ks"] <= 6 and fired["chi2"] <= 6 and fired["psi"] == 0
    assert fired["accuracy"] == 0


# ---- detectors fire on real change ----------------------------------------------------------
def test_feature_shift_triggers_after_hysteresis_naming_the_shifted_features():
    clock = Clock()
    core = make_core(clock, trigger_on=["ks"])
    traffic = Traffic(core, clock, seed=1)
    std1, std5 = 2.0, np.sqrt(5 / 3)  # normal(5, 2) and t(5)
    answers = []
    for _ in range(3):
        traffic.send(WINDOW, shift={1: std1, 5: std5})
        rep, answer = traffic.tick()
        answers.append(answer)
        assert [f.name for f in rep.features if f.ks_flagged] == ["f1", "f5"]
    assert [a[0] for a in answers] == [False, False, True]
    trigger, reason, numbers = answers[-1]
    assert "f1" in reason and "f5" in reason and "KS" in reason
    assert set(numbers["ks_flagged"]) == {"f1", "f5"} and numbers["detectors"] == ["ks"]
    last = core.status()["last_trigger"]
    assert last["detectors"] == ["ks"] and last["ts"] == clock.t
    json.dumps(core.status())


def test_chi_square_triggers_when_predicted_classes_change():
    clock = Clock()
    core = make_core(clock, trigger_on=["chi2"])
    traffic = Traffic(core, clock, seed=2)
    traffic.send(WINDOW)
    assert not traffic.tick()[0].fired["chi2"]
    rng = np.random.default_rng(0)
    for i in range(3):
        # Same feature distribution; the served model now says 1 for 75% of rows.
        X = sample(rng, WINDOW)
        preds = [int(rng.random() < 0.75) for _ in range(WINDOW)]
        core.add_records(
            [
                {
                    "request_id": f"c{i}-{k}",
                    "features": list(x),
                    "prediction": p,
                    "model_version": "1",
                    "latency_ms": 1.0,
                    "error": None,
                    "ts": clock.t,
                }
                for k, (x, p) in enumerate(zip(X, preds, strict=True))
            ]
        )
        rep, (trigger, reason, _) = traffic.tick()
        assert rep.fired["chi2"]
    assert trigger and "class shares" in reason


@pytest.mark.parametrize("concept_shift", [False, True])
def test_accuracy_detector_fires_on_concept_shift_not_on_stationary_labels(concept_shift):
    clock = Clock()
    core = make_core(clock, trigger_on=["accuracy"])
    traffic = Traffic(core, clock, seed=3)
    results = []
    for _ in range(4):
        traffic.label(traffic.send(WINDOW), concept_shift=concept_shift)
        rep, answer = traffic.tick()
        assert not rep.fired["ks"]  # the features did not move, only the labels
        results.append((rep.fired["accuracy"], answer[0]))
    if concept_shift:
        assert [r[0] for r in results] == [True] * 4
        assert [r[1] for r in results] == [False, False, True, False]  # fired once, then cooldown
        assert core.status()["accuracy"] < 0.8
    else:
        assert results == [(False, False)] * 4
        assert core.status()["accuracy"] > 0.95


# ---- feedback -------------------------------------------------------------------------------
def test_feedback_counts_unknown_expired_duplicate_and_accepts_the_rest():
    clock = Clock()
    core = make_core(clock, request_map_ttl_s=100)
    traffic = Traffic(core, clock, seed=4)
    old = traffic.send(20, rows_per_request=1)
    clock.t += 150  # the first requests are now past the TTL
    new = traffic.send(30, rows_per_request=1)
    items = [{"request_id": rid, "label": p[0]} for rid, _, p in old[:5] + new]
    items += [{"request_id": "never-seen", "label": 1}, {"request_id": new[0][0], "label": 0}]
    items += [{"nonsense": True}, {"request_id": new[1][0], "label": [0, 1]}]  # 1 row, 2 labels
    out = core.add_feedback(items)
    # new[0] and new[1] come twice: the second label for new[0] is a duplicate, new[1]'s
    # first label was accepted so its malformed second one is a duplicate too.
    assert out == {"accepted": 30, "unknown": 6, "duplicate": 2, "invalid": 1, "pending": 0}
    assert core.labelled_since("1", 0.0) == (30, 30)
    assert core.labelled_since("1", clock.t + 1) == (0, 0)
    assert core.status()["feedback"] == out
    assert core.status()["request_index"]["expired"] == 20
    X, y = core.labelled_feedback()
    assert X.shape == (30, len(NAMES)) and y.tolist() == [p[0] for _, _, p in new]


def test_label_count_must_match_rows_and_labels_compare_across_types():
    clock = Clock()
    core = make_core(clock)
    traffic = Traffic(core, clock, seed=5)
    (rid, _, preds), (rid2, _, preds2) = traffic.send(20, rows_per_request=10)
    assert core.add_feedback([{"request_id": rid, "label": preds[:3]}])["invalid"] == 1
    # JSON labels may arrive as strings or floats; predictions are ints.
    as_text = [str(p) for p in preds]
    assert core.add_feedback([{"request_id": rid, "label": as_text}])["accepted"] == 1
    as_float = [float(p) for p in preds2]
    assert core.add_feedback([{"request_id": rid2, "label": as_float}])["accepted"] == 1
    assert core.status()["accuracy"] == 1.0
    assert normalize_label(np.int64(2)) == 2 and normalize_label(2.0) == 2
    assert normalize_label(2.5) == 2.5 and normalize_label("a") == "a"


def test_bad_records_are_counted_never_raised():
    clock = Clock()
    core = make_core(clock)
    Traffic(core, clock, seed=6)
    good = {"request_id": "ok", "features": [0.0] * 8, "prediction": 1, "model_version": "1"}
    out = core.add_records(
        [
            good,
            {**good, "request_id": "nan", "features": [float("nan")] * 8},
            {**good, "request_id": "narrow", "features": [0.0] * 3},
            {**good, "request_id": "mismatch", "features": [[0.0] * 8] * 2, "predictions": [1]},
            {"features": [0.0] * 8},  # no version
            "not a record",
            {**good, "error": "overloaded", "features": None},
            {"kind": "shadow", "model_version": "2", "rows": 3, "agree": 3, "ts": clock.t},
        ]
    )
    assert out == {"accepted": 1, "rows": 1, "errors": 1, "invalid": 5, "ignored": 1}
    assert core.status()["versions"]["1"]["errors"] == 1


# ---- hysteresis, cooldown, one retraining at a time ----------------------------------------
def drifting(seed=7, **cfg):
    clock = Clock()
    core = make_core(clock, trigger_on=["ks"], **cfg)
    traffic = Traffic(core, clock, seed=seed)
    return clock, core, traffic


def test_hysteresis_needs_consecutive_fresh_evaluations():
    clock, core, traffic = drifting()
    traffic.send(WINDOW, shift={0: 1.0})
    assert traffic.tick()[1][0] is False
    # Re-evaluating the same window is not new evidence: the streak does not move.
    for _ in range(5):
        rep, (trigger, _, numbers) = traffic.tick()
        assert rep.fired["ks"] and not trigger and numbers["streaks"]["ks"] == 1
    # A stationary window in between breaks the run.
    traffic.send(WINDOW)
    assert traffic.tick()[1][1].startswith("no armed detector")
    assert core.status()["hysteresis"]["ks"]["streak"] == 0
    for expected in (False, False, True):
        traffic.send(WINDOW, shift={0: 1.0})
        assert traffic.tick()[1][0] is expected


def test_fired_detector_rearms_only_after_the_statistic_clears():
    clock, core, traffic = drifting(cooldown_s=0)
    for _ in range(3):
        traffic.send(WINDOW, shift={0: 1.0})
        trigger = traffic.tick()[1][0]
    assert trigger
    # Drift persists: the detector keeps firing but is disarmed, so no new trigger.
    for _ in range(5):
        traffic.send(WINDOW, shift={0: 1.0})
        rep, (trigger, reason, _) = traffic.tick()
        assert rep.fired["ks"] and not trigger
    assert core.status()["hysteresis"]["ks"]["armed"] is False
    # Back to normal: re-armed by the first window whose min adjusted p is above rearm_alpha
    # (a p-value on stationary data is uniform, so that takes one or two windows).
    for _ in range(5):
        traffic.send(WINDOW)
        rep, _ = traffic.tick()
        armed = core.status()["hysteresis"]["ks"]["armed"]
        assert armed == (rep.ks_min_adjusted_p >= core.cfg.rearm_alpha)
        if armed:
            break
    assert armed
    answers = []
    for _ in range(3):
        traffic.send(WINDOW, shift={0: 1.0})
        answers.append(traffic.tick()[1][0])
    assert answers == [False, False, True]


def test_cooldown_and_one_retraining_at_a_time():
    clock, core, traffic = drifting(cooldown_s=600)
    for _ in range(3):
        traffic.send(WINDOW, shift={0: 1.0})
        trigger = traffic.tick()[1][0]
    assert trigger
    t_trigger = clock.t
    core.retraining_started()
    with pytest.raises(RuntimeError, match="one at a time"):
        core.retraining_started()
    for _ in range(3):
        traffic.send(WINDOW, shift={0: 1.0})
        trigger, reason, _ = traffic.tick()[1]
        assert not trigger and "retraining is running" in reason
    core.retraining_finished(ok=True)
    assert core.status()["hysteresis"]["ks"] == {"armed": True, "streak": 0, "over": True}
    # Success re-arms with fresh streaks: three new evaluations, then the cooldown.
    reasons = []
    while True:
        traffic.send(WINDOW, shift={0: 1.0})
        trigger, reason, _ = traffic.tick()[1]
        if trigger:
            break
        reasons.append(reason)
    assert clock.t == t_trigger + 600
    assert reasons[0].startswith("no armed") and reasons[1].startswith("no armed")
    assert len(reasons) > 2 and all(r.startswith("cooldown") for r in reasons[2:])
    assert core.status()["retraining"] == {
        "running_since": None,
        "last_failure_ts": None,
        "started": 1,
        "succeeded": 1,
        "failed": 0,
    }


def test_failed_retraining_is_retried_after_the_cooldown():
    clock, core, traffic = drifting(cooldown_s=600)
    for _ in range(3):
        traffic.send(WINDOW, shift={0: 1.0})
        trigger = traffic.tick()[1][0]
    assert trigger
    core.retraining_started()
    # The drift is still there: the streak keeps counting while the detector is disarmed ...
    for _ in range(3):
        traffic.send(WINDOW, shift={0: 1.0})
        assert traffic.tick()[1][0] is False
    core.retraining_finished(ok=False)
    t_fail = clock.t
    # ... so after the failure only the cooldown (from the failure) holds the retry back.
    traffic.send(WINDOW, shift={0: 1.0})
    trigger, reason, _ = core.evaluate() and core.should_retrain()
    assert not trigger and "cooldown" in reason
    clock.t = t_fail + 599
    traffic.send(WINDOW, shift={0: 1.0})
    core.evaluate()
    assert core.should_retrain()[0] is False
    clock.t = t_fail + 600
    traffic.send(WINDOW, shift={0: 1.0})
    core.evaluate()
    assert core.should_retrain()[0] is True
    st = core.status()["retraining"]
    assert st["failed"] == 1 and st["last_failure_ts"] == t_fail


def test_new_champion_resets_hysteresis():
    clock, core, traffic = drifting()
    for _ in range(2):
        traffic.send(WINDOW, shift={0: 1.0})
        traffic.tick()
    assert core.status()["hysteresis"]["ks"]["streak"] == 2
    ref = sample(np.random.default_rng(9), 300)
    core.set_reference("2", ref, list(predict(ref)), 0.97, NAMES, [0, 1])
    assert core.champion == "2" and core.status()["hysteresis"]["ks"]["streak"] == 0
    rep = core.evaluate()
    assert rep.version == "2" and "need 200" in rep.skipped["ks"]


# ---- memory bounds and data out -------------------------------------------------------------
def test_memory_stays_bounded():
    clock = Clock()
    core = make_core(
        clock,
        window_size=300,
        label_window_size=200,
        min_samples=100,
        request_map_rows=1000,
        max_versions=2,
    )
    traffic = Traffic(core, clock, seed=8)
    for _ in range(20):
        traffic.label(traffic.send(250))
        clock.t += 1
        st = core.status()
        assert st["versions"]["1"]["window_rows"] <= 300
        assert st["versions"]["1"]["window_labelled"] <= 200
        assert st["request_index"]["rows"] <= 1000
    st = core.status()
    assert st["versions"]["1"]["rows_seen"] == 5000 and st["versions"]["1"]["window_rows"] == 300
    assert st["request_index"]["evicted"] > 0
    assert core.labelled_feedback()[0].shape == (200, len(NAMES))
    # Old request ids were evicted: their labels come back unknown, not as an error.
    assert core.add_feedback([{"request_id": "r1", "label": [0] * 10}])["unknown"] == 1
    # Versions: the champion stays, the least recently active other version goes.
    for v in ("7", "8", "9"):
        core.add_records([{"features": [0.0] * 8, "prediction": 0, "model_version": v}])
    assert set(core.status()["versions"]) == {"1", "9"}


def test_labelled_feedback_per_version_and_across_versions():
    clock = Clock()
    core = make_core(clock)
    t1 = Traffic(core, clock, seed=10, version="1")
    t2 = Traffic.__new__(Traffic)
    t2.core, t2.clock, t2.version, t2.rng, t2.n = core, clock, "2", np.random.default_rng(11), 1000
    t1.label(t1.send(40))
    clock.t += 1
    t2.label(t2.send(60))
    X1, y1 = core.labelled_feedback("1")
    X2, y2 = core.labelled_feedback("2")
    X, y = core.labelled_feedback()
    assert X1.shape == (40, 8) and X2.shape == (60, 8) and X.shape == (100, 8)
    assert np.array_equal(X, np.vstack([X1, X2])) and y.tolist() == y1.tolist() + y2.tolist()
    empty_X, empty_y = core.labelled_feedback("unknown-version")
    assert empty_X.shape == (0, 8) and empty_y.shape == (0,)


def test_no_champion_and_missing_baseline_are_reported_not_raised():
    clock = Clock()
    core = make_core(clock)
    rep = core.evaluate()
    assert rep.version is None and set(rep.skipped) == {"ks", "psi", "chi2", "accuracy"}
    assert core.should_retrain()[0] is False
    ref = sample(np.random.default_rng(0), 300)
    core.set_reference("3", ref, None, float("nan"), None, None)
    core.add_records(
        [
            {
                "features": ref[:250].tolist(),
                "predictions": [0] * 250,
                "model_version": "3",
                "request_id": "x",
            }
        ]
    )
    rep = core.evaluate()
    assert "baseline" in rep.skipped["accuracy"] and "reference classes" in rep.skipped["chi2"]
    assert [f.name for f in rep.features][:2] == ["f0", "f1"] and not rep.fired["ks"]


# ---- config ---------------------------------------------------------------------------------
def test_shipped_drift_yaml_is_valid_and_env_overrides_apply(monkeypatch):
    cfg = load_drift_config()
    assert cfg.hysteresis_count >= 1 and cfg.min_samples <= cfg.window_size
    monkeypatch.setenv("MLOPS_DRIFT__COOLDOWN_S", "5")
    monkeypatch.setenv("MLOPS_DRIFT__TRIGGER_ON", "[accuracy]")
    cfg = load_drift_config()
    assert cfg.cooldown_s == 5 and cfg.trigger_on == ["accuracy"]


def test_inconsistent_drift_config_is_refused():
    with pytest.raises(ValidationError, match="min_samples"):
        DriftConfig(window_size=100, min_samples=200)
    with pytest.raises(ValidationError, match="psi_rearm_threshold"):
        DriftConfig(psi_threshold=0.1, psi_rearm_threshold=0.2)
    with pytest.raises(ValidationError, match="rearm_alpha"):
        DriftConfig(ks_alpha=0.2, rearm_alpha=0.1)
    with pytest.raises(ValidationError):
        DriftConfig(not_a_field=1)


def test_label_that_beats_its_record_waits_then_joins_or_expires():
    clock = Clock()
    core = make_core(clock, feedback_grace_s=10)
    early = [{"request_id": "a", "label": 1}, {"request_id": "b", "label": 0}]
    assert core.add_feedback(early) == {
        "accepted": 0,
        "unknown": 0,
        "duplicate": 0,
        "invalid": 0,
        "pending": 2,
    }
    assert core.add_feedback([{"request_id": "a", "label": 1}])["duplicate"] == 1
    clock.t += 5
    core.add_records(
        [{"request_id": "a", "features": [0.0] * 8, "prediction": 1, "model_version": "1"}]
    )
    assert core.labelled_since("1", 0.0) == (1, 1)
    clock.t += 6  # "b" never came: past the grace period it is unknown
    core.evaluate()
    fb = core.status()["feedback"]
    assert fb["accepted"] == 1 and fb["unknown"] == 1 and fb["pending"] == 0


def test_rows_for_retraining_after_a_concept_shift_start_where_accuracy_dropped():
    """The label window holds old-concept rows before the shift; retraining after an accuracy
    drop must not learn them back."""
    clock = Clock()
    core = make_core(clock, trigger_on=["accuracy"])
    traffic = Traffic(core, clock, seed=5)
    traffic.label(traffic.send(300))
    clock.t += 10
    traffic.label(traffic.send(200), concept_shift=True)
    X_all, _ = core.labelled_feedback()
    X, y, cp = core.labelled_after_drop()
    assert len(X_all) == 500
    assert abs(cp.index - 300) <= 30, cp  # about where the shift started
    assert cp.before > 0.9 and cp.after < cp.before - 0.15
    assert len(X) == len(y) == 500 - cp.index
    np.testing.assert_array_equal(X, X_all[cp.index :])
    # Stationary labels only: nothing is cut.
    core2 = make_core(clock)
    traffic2 = Traffic(core2, clock, seed=6)
    traffic2.label(traffic2.send(400))
    X2, _, cp2 = core2.labelled_after_drop()
    assert cp2.index == 0 and len(X2) == 400


# ---- label sources, pinned requests, bounded early labels ------------------------------------
def flipped(sent) -> list[dict]:
    """Every label the opposite of the prediction: a client poisoning the feedback."""
    return [{"request_id": rid, "label": [1 - p for p in pi]} for rid, _, pi in sent]


def truthful(sent) -> list[dict]:
    return [{"request_id": rid, "label": list(pi)} for rid, _, pi in sent]


def test_one_source_cannot_push_the_other_sources_labels_out():
    clock = Clock()
    core = make_core(clock, max_source_share=0.5)
    traffic = Traffic(core, clock, seed=11)
    assert core.add_feedback(truthful(traffic.send(200)), source="app")["accepted"] == 20
    out = core.add_feedback(flipped(traffic.send(2000)), source="mallory")
    assert out["accepted"] == 200  # every label is taken; the window keeps the newest of each
    status = core.status()
    window = status["versions"]["1"]["window_sources"]
    assert window == {"app": 200, "mallory": WINDOW // 2}
    assert status["feedback_sources"]["mallory"] == {"accepted": 200, "displaced": 2000 - 250}
    assert status["feedback_sources"]["app"] == {"accepted": 20, "displaced": 0}
    # Without the limit the flood would leave the window all flipped (accuracy 0).
    assert status["versions"]["1"]["window_accuracy"] == pytest.approx(200 / 450)
    # Retraining reads the same bounded window: at most half of its rows are mallory's.
    _, y = core.labelled_feedback()
    assert len(y) == 450


def test_a_single_source_has_the_whole_window_and_a_second_one_gets_room():
    clock = Clock()
    core = make_core(clock, max_source_share=0.5)
    traffic = Traffic(core, clock, seed=12)
    traffic.label(traffic.send(2000))  # source "default"
    status = core.status()
    assert status["versions"]["1"]["window_sources"] == {"default": WINDOW}
    assert status["feedback_sources"]["default"]["displaced"] == 0
    core.add_feedback(truthful(traffic.send(100)), source="audit")
    assert core.status()["versions"]["1"]["window_sources"] == {"default": 400, "audit": 100}
    # "default" is over its half now: its new labels replace its own oldest ones, while the
    # other source's new labels push out the window's oldest (default's) until it is at half.
    traffic.label(traffic.send(100))
    assert core.status()["versions"]["1"]["window_sources"] == {"default": 400, "audit": 100}
    core.add_feedback(truthful(traffic.send(300)), source="audit")
    assert core.status()["versions"]["1"]["window_sources"] == {"default": 250, "audit": 250}


def test_max_labels_per_source_keeps_one_source_from_firing_the_accuracy_detector_alone():
    clock = Clock()
    core = make_core(clock, trigger_on=["accuracy"], max_labels_per_source=60)
    traffic = Traffic(core, clock, seed=13)
    for _ in range(4):
        core.add_feedback(flipped(traffic.send(WINDOW)), source="mallory")
        rep, (trigger, _, _) = traffic.tick()
        assert not trigger and "accuracy" in rep.skipped  # 60 labels < min_labelled 100
    assert core.status()["versions"]["1"]["window_sources"] == {"mallory": 60}
    # Together with another source's labels there is enough evidence to test (and half of
    # it flipped is a real drop: the limit bounds one source's weight, it does not hide it).
    core.add_feedback(truthful(traffic.send(WINDOW)), source="app")
    rep, _ = traffic.tick()
    assert "accuracy" not in rep.skipped and rep.accuracy.n == 120
    assert core.status()["versions"]["1"]["window_sources"] == {"mallory": 60, "app": 60}


def test_pinned_requests_stay_out_of_the_canary_accuracy():
    clock = Clock()
    core = make_core(clock)
    Traffic(core, clock, seed=14)
    records = [
        {
            "request_id": f"p{i}",
            "features": [0.0] * 8,
            "prediction": 1,
            "model_version": "2",
            "pinned": i % 2 == 0,
            "ts": clock.t,
        }
        for i in range(10)
    ]
    assert core.add_records(records)["accepted"] == 10
    out = core.add_feedback([{"request_id": f"p{i}", "label": 0} for i in range(10)])
    assert out["accepted"] == 10
    assert core.labelled_since("2", 0.0) == (5, 0)  # the 5 unpinned ones only
    _, y = core.labelled_feedback("2")
    assert len(y) == 10  # the labels are still ground truth for drift and retraining


def test_pinned_requests_stay_out_of_the_canary_request_numbers():
    """DriftMonitor.ingest (the actor's plain method, called without Ray): pinned requests
    and their errors do not count in the version stats the controller's analysis reads."""
    from monitoring.monitor import DriftMonitor

    monitor = object.__new__(DriftMonitor.func_or_class)
    monitor._core, monitor._stats = make_core(Clock()), {}
    base = {"model_version": "2", "ts": 1000.0, "latency_ms": 5.0}
    records = [
        {**base, "request_id": "a", "features": [0.0] * 8, "prediction": 1, "error": None},
        {**base, "request_id": "b", "error": "model_error", "pinned": True},
        {**base, "request_id": "c", "error": "model_error", "pinned": True},
        {**base, "request_id": "d", "features": [0.0] * 8, "prediction": 1, "pinned": True},
    ]
    assert asyncio.run(monitor.ingest(records)) == 4
    snap = monitor._stats["2"].since(0.0)
    assert snap.requests == 1 and snap.errors == 0
    assert monitor._core.status()["versions"]["2"]["rows_seen"] == 2  # drift sees both rows


def test_early_labels_are_bounded_by_bytes_too():
    clock = Clock()
    core = make_core(clock, feedback_grace_s=10, feedback_grace_bytes=20_000)
    big = {"request_id": "big", "label": list(range(10_000))}
    assert core.add_feedback([big])["unknown"] == 1  # larger than the whole store
    small = [{"request_id": f"s{i}", "label": [1] * 200} for i in range(40)]
    out = core.add_feedback(small)
    early = core.status()["early_labels"]
    assert early["bytes"] <= 20_000 and early["entries"] < 40
    # The oldest gave way to the newest, each counted once as unknown.
    assert (
        out["pending"] == 40 and core.status()["feedback"]["unknown"] == 1 + 40 - early["entries"]
    )
    assert core.status()["feedback"]["pending"] == early["entries"]
    assert "s39" in core._early and "s0" not in core._early


# ---- string (categorical) columns ------------------------------------------------------------
def mixed_rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Rows as the router sends them for a model with a string column: an object matrix of
    (x float, color str, z float)."""
    X = np.empty((n, 3), dtype=object)
    X[:, 0] = (rng.normal(size=n) + shift).tolist()
    X[:, 1] = rng.choice(["red", "green", "blue"], n).tolist()
    X[:, 2] = rng.normal(size=n).tolist()
    return X


@pytest.mark.parametrize("live", [False, True], ids=["logged_reference", "live_reference"])
def test_string_columns_are_kept_and_skipped_by_ks_psi_numeric_ones_still_tested(live):
    clock = Clock()
    core = make_core(clock, min_samples=100, live_reference_rows=300)
    rng = np.random.default_rng(7)
    names = ["x", "color", "z"]
    ref = None if live else mixed_rows(rng, 400)
    core.set_reference("1", ref, None, None, names, ["a", "b"], reference_source="input_example")
    records = [
        {
            "kind": "request",
            "request_id": f"r{i}",
            "features": mixed_rows(rng, 10, shift=0.0 if i < 30 else 3.0),
            "predictions": ["a"] * 5 + ["b"] * 5,
            "model_version": "1",
            "latency_ms": 1.0,
            "error": None,
            "ts": clock(),
        }
        for i in range(60)
    ]
    counts = core.add_records(records)
    # Not one record dropped as invalid: every row of them is in the window.
    assert counts["accepted"] == 60 and counts["invalid"] == 0 and counts["rows"] == 600
    rep = core.evaluate()
    assert "color" in rep.skipped["string_columns"], rep.skipped
    assert "ks" not in rep.skipped and "psi" not in rep.skipped, rep.skipped
    assert [f.name for f in rep.features] == ["x", "z"]
    # x shifted by 3 standard deviations in the later half: KS and PSI see it, z stays put.
    assert rep.fired["ks"] and rep.fired["psi"]
    assert rep.flagged_features == ["x"], rep.features
    json.dumps(core.status())  # the status stays JSON-able


def test_list_rows_with_strings_are_accepted_and_non_finite_numbers_still_refused():
    """A record whose rows are JSON-like lists holding a string is accepted (its string
    column is NaN in the window); a NaN in a numeric column is still invalid."""
    clock = Clock()
    core = make_core(clock, min_samples=10)
    rng = np.random.default_rng(3)
    core.set_reference("1", mixed_rows(rng, 50), None, None, ["x", "color", "z"], ["a"])
    row = {"kind": "request", "model_version": "1", "predictions": ["a"], "error": None}
    assert core.add_records([{**row, "features": [[0.1, "red", 0.2]]}])["accepted"] == 1
    bad = core.add_records([{**row, "features": [[float("nan"), "red", 0.2]]}])
    assert bad["invalid"] == 1  # a non-finite numeric cell is still refused


def test_error_rise_is_cut_on_the_champions_own_rows_not_a_rolled_back_challengers():
    """A regressor: a challenger with large errors was tried (and rolled back) first, then the
    champion served the old concept, then the target moved. Over every version's rows the
    challenger's early errors hide the rise; on the champion's own rows it is clear, and the
    cut keeps every version's rows from there on."""
    clock = Clock()
    core = make_core(clock)
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 3))
    for version in ("1", "2"):
        core.set_reference(
            version,
            ref,
            task="regression",
            baseline_rmse=55.0,
            reference_predictions=rng.normal(150, 50, 300).tolist(),
            champion=version == "1",
        )

    def serve(version: str, n: int, error_sd: float, shift: float = 0.0) -> None:
        rows = rng.normal(size=(n, 3))
        preds = rng.normal(150, 50, n)
        ids = [f"{version}-{clock.t}-{i}" for i in range(n)]
        core.add_records(
            [
                {
                    "request_id": rid,
                    "features": [row.tolist()],
                    "predictions": [float(p)],
                    "model_version": version,
                    "ts": clock.t,
                }
                for rid, row, p in zip(ids, rows, preds, strict=True)
            ]
        )
        moved = np.where(rng.random(n) < 0.5, shift, 0.0)
        labels = preds + rng.normal(0, error_sd, n) + moved
        core.add_feedback(
            [{"request_id": rid, "label": float(y)} for rid, y in zip(ids, labels, strict=True)]
        )
        clock.t += 1

    for _ in range(8):  # the canary: champion and a worse challenger side by side
        serve("1", 20, 55)
        serve("2", 20, 85)
    for _ in range(2):
        serve("1", 25, 55)  # stationary
    for _ in range(3):
        serve("1", 25, 55, shift=90)  # the target moved for half the rows

    X_all, _ = core.labelled_feedback()
    X, y, cp = core.labelled_after_drop()
    assert len(X_all) == 445
    assert cp.index > 0 and cp.after > cp.before, cp  # rows dropped; errors rose
    assert len(X) == len(y) == 445 - cp.index
    # The cut is at the shift: the canary's and the stationary rows (370) are gone. (Over
    # every version's rows this seed finds no significant rise at all: nothing is cut.)
    assert cp.index >= 340, cp
