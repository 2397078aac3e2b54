"""Which data a drift-triggered retraining trains on (no Ray)."""

import pytest

from training.retrain import gate, include_base


def trigger(*detectors):
    return {"reason": "test", "numbers": {"detectors": list(detectors)}}


def test_auto_leaves_the_base_data_out_after_a_concept_change():
    assert include_base("auto", trigger("accuracy")) is False
    assert include_base("auto", trigger("ks", "accuracy")) is False


def test_auto_keeps_the_base_data_when_only_the_inputs_moved():
    assert include_base("auto", trigger("ks", "psi")) is True
    assert include_base("auto", trigger("chi2")) is True
    assert include_base("auto", {"reason": "manual"}) is True


def test_always_and_never_ignore_the_trigger():
    assert include_base("always", trigger("accuracy")) is True
    assert include_base("never", trigger("ks")) is False
    with pytest.raises(ValueError, match="auto, always or never"):
        include_base("sometimes", trigger("ks"))


# ---- the registration gate --------------------------------------------------------------------
GATE = {"margin": 0.02, "min_score": 0.85, "base_tolerance": 0.02}


def test_gate_registers_a_winner_better_on_recent_rows_and_as_good_on_the_base_hold_out():
    assert gate(0.95, 0.80, 0.94, 0.95, **GATE) == []
    assert gate(0.95, None, 0.90, None, **GATE) == []  # no champion: only the floor


def test_gate_refuses_a_winner_that_only_learned_the_feedback():
    """Flipped labels make the recent hold-out agree with the poisoned model; the base
    hold-out, which no label can change, does not."""
    why = gate(0.97, 0.05, 0.30, 0.96, **GATE)
    assert len(why) == 2
    assert "base hold-out accuracy 0.3000 is below min_score 0.85" in why[0]
    assert "more than 0.02 below the champion's 0.9600" in why[1]


def test_gate_checks_each_condition_on_its_own():
    assert gate(0.81, 0.80, 0.95, 0.95, **GATE) == [
        "recent hold-out accuracy 0.8100 does not beat the champion's 0.8000 by 0.02"
    ]
    assert gate(0.95, 0.80, 0.84, None, **GATE) == [
        "base hold-out accuracy 0.8400 is below min_score 0.85"
    ]
    assert gate(0.95, 0.80, 0.90, 0.95, **GATE) == [
        "base hold-out accuracy 0.9000 is more than 0.02 below the champion's 0.9500"
    ]
    assert gate(0.95, 0.80, 0.90, 0.95, **{**GATE, "base_tolerance": 0.1}) == []


def test_retraining_config_has_the_base_tolerance():
    from configs import load_retraining_config

    assert load_retraining_config().base_tolerance == 0.02


def test_retraining_never_moves_an_alias():
    """The RolloutController is the only writer of aliases: retraining registers a version
    and the monitor hands it to the controller."""
    import inspect

    from training import retrain

    source = inspect.getsource(retrain)
    assert "set_alias" not in source and "delete_alias" not in source


def test_gate_without_a_base_hold_out_compares_the_recent_rows_only():
    """A user's entry point has no base dataset: only the recent comparison applies."""
    assert gate(0.95, 0.80, None, None, **GATE) == []
    assert gate(0.81, 0.80, None, None, **GATE) == [
        "recent hold-out accuracy 0.8100 does not beat the champion's 0.8000 by 0.02"
    ]
    from training.retrain import regression_gate

    kw = {"rmse_margin": 0.05, "min_r2": 0.3, "base_rmse_tolerance": 0.1}
    assert regression_gate(0.5, 1.0, None, None, None, **kw) == []
    assert regression_gate(0.97, 1.0, None, None, None, **kw) == [
        "recent hold-out RMSE 0.97 does not beat the champion's 1 by 5%"
    ]
