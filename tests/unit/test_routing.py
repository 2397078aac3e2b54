"""Slot choice: pins, sticky keys and weights."""

import random
from collections import Counter

import pytest

from deployments.routing import NoLiveModel, TrafficSplit, UnknownVersion


def test_single_live_slot_takes_everything():
    split = TrafficSplit.from_state({"blue": "3", "green": None}, {"blue": 1.0, "green": 0.0})
    assert {split.pick(rng=random.Random(i)) for i in range(50)} == {("blue", "3")}


def test_no_live_slot_is_not_ready():
    split = TrafficSplit.from_state({"blue": None, "green": None}, {"blue": 0, "green": 0})
    assert not split.ready
    with pytest.raises(NoLiveModel):
        split.pick()


def test_pin_reaches_a_loaded_slot_even_at_zero_weight_and_unknown_pin_lists_live():
    split = TrafficSplit.from_state({"blue": "3", "green": "4"}, {"blue": 1.0, "green": 0.0})
    assert split.pick(pin="4") == ("green", "4")
    with pytest.raises(UnknownVersion) as err:
        split.pick(pin="9")
    assert err.value.live == ["3", "4"]


def test_weights_are_followed():
    split = TrafficSplit.from_state({"blue": "3", "green": "4"}, {"blue": 0.9, "green": 0.1})
    rng = random.Random(7)
    counts = Counter(split.pick(rng=rng)[0] for _ in range(20000))
    assert 0.085 < counts["green"] / 20000 < 0.115


def test_sticky_key_is_stable_and_spreads():
    split = TrafficSplit.from_state({"blue": "3", "green": "4"}, {"blue": 0.5, "green": 0.5})
    for key in ("user-1", "user-2", "abc"):
        assert len({split.pick(key=key) for _ in range(20)}) == 1
    slots = Counter(split.pick(key=f"user-{i}")[0] for i in range(2000))
    assert 0.4 < slots["blue"] / 2000 < 0.6
