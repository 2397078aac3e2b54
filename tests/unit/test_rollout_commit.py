"""The rollout record as commit point, against a real MLflow registry (SQLite), no Ray.

A crash or an outage between any two registry writes is injected with
`tests.faults.FaultyRegistryClient` (the writes before it really happen); a new `RolloutCore`
then rebuilds the state from the registry as a restarted controller would. It must come back to
the old or the new state, never a mix; bad weights and reasons are refused before anything moves.
"""

import json
import math

import pytest

from deployments.rollout import ROLLOUT_TAG, RolloutCore, RolloutError, StaleRecord
from tests.faults import FaultyRegistryClient, fail_writes_of
from training import registry

NAME = "m"


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def core(client, clock=None):
    clock = clock or Clock()
    return RolloutCore(model_name=NAME, client=client, wall=clock, clock=clock)


def canary(client, version="2", step=0):
    """A bootstrapped core with ``version`` at ``step`` in green, committed."""
    c = core(client)
    c.bootstrap()
    slot = c.begin_rollout(version)
    c.assign(slot, version)
    c.enter_step(version, slot, step)
    c.persist()
    return c


def restarted(client):
    again = core(client)
    again.bootstrap()
    return again


def aliases(client):
    return (
        registry.alias_version(client, NAME, registry.CHAMPION),
        registry.alias_version(client, NAME, registry.CHALLENGER),
    )


def record(client):
    return json.loads(registry.model_tags(client, NAME)[ROLLOUT_TAG])


# ---- one record, written last ---------------------------------------------------------------
def test_the_whole_state_is_one_record_with_an_increasing_seq(client):
    c = canary(client)
    first = record(client)
    assert first["rollout"]["version"] == "2" and first["rollout"]["slot"] == "green"
    assert first["slots"] == {"blue": "1", "green": "2"} and first["champion"] == "1"
    c.enter_step("2", "green", 1)
    c.persist()
    assert record(client)["seq"] == first["seq"] + 1
    assert record(client)["rollout"]["step"] == 1


def test_start_cut_short_before_its_record_leaves_the_old_state(client):
    c = core(client)
    c.bootstrap()
    c.client = FaultyRegistryClient(client, fail_writes_of(ROLLOUT_TAG))
    c.assign("green", "2")
    c.enter_step("2", "green", 0)
    with pytest.raises(registry.RegistryUnavailable):
        c.persist()
    assert aliases(client) == ("1", "2")  # the alias was written, the record was not

    again = restarted(client)
    assert again.rollout is None
    assert again.weights == {"blue": 1.0, "green": 0.0}
    assert aliases(client) == ("1", None)  # the stray challenger alias is gone


@pytest.mark.parametrize(
    "failing",
    [
        (ROLLOUT_TAG,),  # the record write failed
        ("mlops.rejected", ROLLOUT_TAG),  # both tag writes failed
        (registry.CHALLENGER, "mlops.rejected"),  # the alias and the version tag failed
    ],
)
def test_a_rollback_whose_writes_failed_does_not_come_back_after_a_restart(client, failing):
    c = canary(client, step=1)
    c.client = FaultyRegistryClient(client, fail_writes_of(*failing))
    c.rollback("error rate too high", {})
    assert c.weights == {"blue": 1.0, "green": 0.0}  # traffic moved at once, in memory
    with pytest.raises(registry.RegistryUnavailable):
        c.persist()
    assert c.dirty

    again = restarted(client)
    assert again.rollout is None, again.rollout
    assert again.weights["green"] == 0.0 and again.weights["blue"] == 1.0
    assert again.champion == "1"
    assert aliases(client) == ("1", None)
    assert again.history[-1]["event"] in ("rolled_back", "abandoned")


def test_a_rollback_written_in_full_is_recorded(client):
    c = canary(client)
    c.rollback("error rate too high", {"n": 1})
    c.persist()
    assert aliases(client) == ("1", None)
    assert record(client)["rollout"] is None
    rejected = json.loads(client.get_model_version(NAME, "2").tags["mlops.rejected"])
    assert rejected["reason"] == "error rate too high"


def test_promotion_cut_short_after_the_alias_is_completed_on_restart(client):
    c = canary(client)
    c.client = FaultyRegistryClient(client, fail_writes_of(ROLLOUT_TAG))
    saved = c.checkpoint()
    c.promote("passed", {})
    with pytest.raises(registry.RegistryUnavailable):
        c.persist()
    assert aliases(client)[0] == "2"  # champion moved, the record did not follow

    again = restarted(client)  # new state: promoted, v2 alone in green
    assert again.champion == "2" and again.rollout is None
    assert again.slots["green"] == "2"
    assert again.weights == {"blue": 0.0, "green": 1.0}
    assert aliases(client) == ("2", None)
    assert record(client)["champion"] == "2"

    # The controller that failed undoes the promotion in memory; once the registry answers,
    # its retry writes the alias back, so registry and memory agree again.
    c.restore(saved)
    c.client = client
    c.seq = record(client)["seq"]
    c.persist()
    assert aliases(client) == ("1", "2")


def test_promotion_with_a_non_string_reason_is_refused_before_anything_moves(client):
    c = canary(client)
    before = (c.checkpoint(), c.epoch, record(client))
    for bad in (1, None, ["x"], {"r": 1}):
        with pytest.raises(RolloutError, match="reason must be a string"):
            c.promote(bad, {})
        with pytest.raises(RolloutError, match="reason must be a string"):
            c.rollback(bad, {})
    assert (c.checkpoint(), c.epoch, record(client)) == before
    assert aliases(client) == ("1", "2")


def test_champion_alias_moved_outside_the_controller_is_adopted_and_the_rollout_abandoned(
    client,
):
    canary(client)
    registry.set_alias(client, NAME, registry.CHAMPION, "3")  # an operator, or `make train`
    again = restarted(client)
    assert again.champion == "3" and again.rollout is None
    assert again.weights == {"blue": 1.0, "green": 0.0} and again.slots["blue"] == "3"
    assert aliases(client) == ("3", None)
    assert again.history[-1]["event"] == "abandoned"


def test_a_second_writer_is_detected(client):
    a = canary(client)
    b = restarted(client)
    b.set_paused(True)
    b.persist()
    a.enter_step("2", "green", 1)
    with pytest.raises(StaleRecord):
        a.persist()
    assert record(client)["rollout"]["paused"] is True  # b's record stands


# ---- weights --------------------------------------------------------------------------------
BAD_WEIGHTS = [
    {"blue": math.nan},
    {"blue": math.inf, "green": 1.0},
    {"blue": -math.inf},
    {"blue": -0.5, "green": 1.0},
    {"blue": 1e308},
    {"blue": 10**400},
    {"blue": 1e6 + 1},
    {"blue": "0.5"},
    {"blue": True},
    {"blue": None},
    {"blue": [1]},
    {"purple": 1.0},
    {"blue": 0, "green": 0},
    {},
    [0.5, 0.5],
    "blue",
]


@pytest.mark.parametrize("weights", BAD_WEIGHTS, ids=repr)
def test_bad_weights_are_refused_and_nothing_changes(client, weights):
    c = canary(client)
    before = (c.weights, c.epoch, c.rollout, record(client))
    with pytest.raises(RolloutError) as err:
        c.set_weights(weights)
    assert "weight" in str(err.value) or "slot" in str(err.value)
    assert (c.weights, c.epoch, c.rollout, record(client)) == before


def test_good_weights_are_normalised():
    from deployments.rollout import check_weights

    slots = {"blue": "1", "green": "2"}
    assert check_weights({"blue": 3, "green": 1}, slots) == {"blue": 0.75, "green": 0.25}
    assert check_weights({"green": 1e6}, slots) == {"blue": 0.0, "green": 1.0}


@pytest.mark.parametrize(
    "stored", ['{"blue": NaN, "green": 1}', '{"blue": Infinity}', '{"blue": -1, "green": 2}']
)
def test_a_bad_stored_weight_falls_back_to_the_champion_alone(client, stored):
    c = canary(client)
    c.set_weights({"blue": 0.5, "green": 0.5})
    c.set_paused(True)
    c.persist()
    body = registry.model_tags(client, NAME)[ROLLOUT_TAG]
    rec = json.loads(body)
    raw = json.dumps(rec).replace(json.dumps(rec["weights"]), stored)
    assert raw != json.dumps(rec)
    client.set_registered_model_tag(NAME, ROLLOUT_TAG, raw)

    again = restarted(client)
    assert again.weights == {"blue": 1.0, "green": 0.0}
    again.finish_resume()  # the slot loaded: still no hand-set weights from the bad record
    assert all(math.isfinite(w) and w >= 0 for w in again.weights.values())
    assert again.weights["blue"] == pytest.approx(1.0)
    assert any(e["event"] == "invalid_weights" for e in again.history)


# ---- outage ---------------------------------------------------------------------------------
def test_bootstrap_during_an_outage_changes_nothing(client):
    c = canary(client)
    before = c.checkpoint()
    c.client = FaultyRegistryClient(client, lambda method, args: True)
    with pytest.raises(registry.RegistryUnavailable):
        c.bootstrap()
    assert c.checkpoint() == before and c.known


def test_provisional_state_is_adopted_only_when_the_replicas_confirm_it(client):
    held = canary(client).snapshot()
    c = core(client)  # restarted, registry down: knows nothing
    assert not c.known
    assert not c.adopt_provisional(held)  # no replica has reported yet
    c.record_replica("blue", "b1", "1")
    c.record_replica("green", "g1", "3")  # green holds something else than held says
    assert not c.adopt_provisional(held)
    c.record_replica("green", "g1", "2")
    assert not c.adopt_provisional({**held, "weights": {"blue": math.nan}})
    assert c.adopt_provisional(held)
    assert c.provisional and c.known
    assert c.slots == held["slots"] and c.weights == held["weights"]
    assert c.snapshot()["versions"]["2"]["feature_names"] == ["x"]
    with pytest.raises(RolloutError, match="registry has not been read"):
        c.begin_rollout("3")
