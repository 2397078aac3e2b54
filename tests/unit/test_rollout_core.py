"""RolloutCore against a real MLflow registry (SQLite in a temp dir), no Ray: state is rebuilt
from aliases and tags, and anything inconsistent falls back to the champion alone."""

import json

import pytest

from deployments.rollout import RolloutCore, RolloutError
from training import registry

NAME = "m"


def core(client, t=1000.0):
    return RolloutCore(model_name=NAME, client=client, wall=lambda: t, clock=lambda: t)


def test_bootstrap_puts_champion_alone_in_blue(client):
    c = core(client)
    c.bootstrap()
    assert c.slots == {"blue": "1", "green": None}
    assert c.weights == {"blue": 1.0, "green": 0.0}
    assert c.snapshot()["versions"]["1"]["feature_names"] == ["x"]


def test_snapshot_reports_what_live_replicas_have_loaded(client):
    """What a router's readiness waits for: the champion's slot holds it on a live replica."""
    now = [1000.0]
    c = RolloutCore(model_name=NAME, client=client, wall=lambda: now[0], clock=lambda: now[0])
    c.bootstrap()
    assert c.snapshot()["loaded"] == {"blue": [], "green": []}
    c.record_replica("blue", "r1", None)  # started, still loading
    assert c.snapshot()["loaded"]["blue"] == []
    c.record_replica("blue", "r2", "1")
    assert c.snapshot()["loaded"] == {"blue": ["1"], "green": []}
    now[0] += c.heartbeat_ttl_s + 1  # neither replica heard from since: not live
    assert c.snapshot()["loaded"]["blue"] == []


def test_rollout_state_survives_a_restart(client):
    c = core(client)
    c.bootstrap()
    slot = c.begin_rollout("2")
    c.assign(slot, "2")
    c.enter_step("2", slot, 0)
    c.enter_step("2", slot, 1)
    c.persist()
    c.persist_history()
    assert registry.alias_version(client, NAME, registry.CHALLENGER) == "2"

    again = core(client)
    again.bootstrap()
    assert again.slots == {"blue": "1", "green": "2"}
    assert again.rollout["version"] == "2" and again.rollout["step"] == 1
    assert again.rollout["resumed"] is True
    # Until the challenger slot reports loaded, it gets no traffic.
    assert again.weights == {"blue": 1.0, "green": 0.0}
    assert [e["event"] for e in again.history] == ["started"]
    again.finish_resume()  # the slot has loaded: the step's share comes back
    assert again.weights == pytest.approx({"blue": 0.75, "green": 0.25})
    assert again.rollout["resumed"] is False and again.rollout["step"] == 1


def test_paused_rollout_with_hand_set_weights_comes_back_as_it_was(client):
    c = core(client)
    c.bootstrap()
    slot = c.begin_rollout("2")
    c.assign(slot, "2")
    c.enter_step("2", slot, 0)
    c.set_weights({"blue": 0.6, "green": 0.4})
    c.set_paused(True)
    c.persist()

    again = core(client)
    again.bootstrap()
    assert again.rollout["paused"] is True and again.weights == {"blue": 1.0, "green": 0.0}
    again.finish_resume()
    assert again.weights == pytest.approx({"blue": 0.6, "green": 0.4})
    assert again.rollout["paused"] is True and again.rollout["step"] == 0


def test_rollout_record_that_disagrees_with_aliases_falls_back_safely(client):
    client.set_registered_model_tag(
        NAME, "mlops.rollout", json.dumps({"version": "2", "slot": "green", "step": 2})
    )
    c = core(client)
    c.bootstrap()  # no challenger alias: the record is stale
    assert c.rollout is None
    assert c.weights == {"blue": 1.0, "green": 0.0}
    assert c.history[-1]["event"] == "abandoned"


def test_promote_and_rollback_write_aliases_and_tags(client):
    c = core(client)
    c.bootstrap()
    with pytest.raises(RolloutError, match="already the champion"):
        c.begin_rollout("1")
    c.assign("green", "2")
    c.enter_step("2", "green", 0)
    assert c.weights == {"blue": 0.9, "green": pytest.approx(0.1)}
    with pytest.raises(RolloutError, match="in progress"):
        c.begin_rollout("3")
    c.rollback("error rate too high", {"n": 1})
    c.persist()
    assert c.weights == {"blue": 1.0, "green": 0.0}
    assert registry.alias_version(client, NAME, registry.CHALLENGER) is None
    rejected = json.loads(client.get_model_version(NAME, "2").tags["mlops.rejected"])
    assert rejected["reason"] == "error rate too high"

    c.assign("green", "3")
    c.enter_step("3", "green", 0)
    c.promote("passed", {})
    c.persist()
    assert registry.alias_version(client, NAME, registry.CHAMPION) == "3"
    assert c.champion == "3" and c.weights == {"blue": 0.0, "green": 1.0}
    assert "mlops.promoted_at" in client.get_model_version(NAME, "3").tags
    assert [e["event"] for e in c.history] == ["started", "rolled_back", "started", "promoted"]


def test_weights_refuse_an_empty_slot(client):
    c = core(client)
    c.bootstrap()
    with pytest.raises(ValueError, match="serves no version"):
        c.set_weights({"blue": 0.5, "green": 0.5})
