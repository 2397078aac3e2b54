"""Which data a drift-triggered retraining trains on (no Ray)."""

import pytest

from training.retrain import include_base


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
