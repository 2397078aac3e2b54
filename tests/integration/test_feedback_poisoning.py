"""Feedback poisoning, end to end on real Ray (Tune) and a real MLflow registry: a client
predicts, then posts the opposite of every answer as its label. The accuracy detector fires
(the labels say the champion is wrong) and retraining runs on those labels, leaving the base
data out as it does after an accuracy drop. The poisoned winner beats the champion on the
recent hold-out (cut from the same labels), but the base hold-out, which no label can change,
refuses it: nothing is registered and no alias moves.

The DriftMonitor's logic (`DriftMonitorCore`, fed as the actor feeds it) and the retraining
function are called directly: the HTTP path to them has its own tests (label sources and pinned
requests through the router: tests/integration/test_hostile_inputs.py)."""

import mlflow
import numpy as np
import pytest

from configs import DriftConfig, load_retraining_config
from monitoring.core import DriftMonitorCore
from monitoring.monitor import load_reference
from training import registry
from training.data import load_dataset
from training.retrain import retrain

pytestmark = pytest.mark.ray
NAME = "poisoning_target"


@pytest.fixture
def target(trained, mlflow_uri, training_config):
    """The session's champion registered again under a name of its own, as champion."""
    client = registry.get_client(mlflow_uri)
    source = client.get_model_version(training_config.model_name, trained.version)
    registry.use_tracking_uri(mlflow_uri)
    version = str(mlflow.register_model(source.source, NAME, tags=source.tags).version)
    registry.set_alias(client, NAME, registry.CHAMPION, version)
    return training_config.model_copy(update={"model_name": NAME}), version


def test_flipped_labels_fire_the_detector_but_the_poisoned_model_is_not_registered(
    ray_cluster, mlflow_uri, target
):
    cfg, champion = target
    client = registry.get_client(mlflow_uri)
    model = registry.load_model(mlflow_uri, NAME, champion)
    info = registry.version_info(client, NAME, champion)
    frame, labels, _ = load_reference(client, NAME, champion)

    now = [1000.0]
    core = DriftMonitorCore(
        DriftConfig(
            feedback_grace_s=0,
            min_labelled=100,
            min_new_labels=25,
            hysteresis_count=2,
            cooldown_s=0,
            trigger_on=["accuracy"],
        ),
        clock=lambda: now[0],
    )
    core.set_reference(
        champion,
        frame.to_numpy(),
        labels,
        float(info.tags["test_accuracy"]),
        list(frame.columns),
        info.classes,
    )

    X, _ = load_dataset(cfg.dataset)
    rng = np.random.default_rng(7)
    fired = False
    for step in range(6):
        rows = X.iloc[rng.choice(len(X), 150, replace=False)]
        pred = model.predict(rows)
        records = [
            {
                "kind": "request",
                "request_id": f"q{step}-{i}",
                "features": rows.iloc[[i]].to_numpy(),
                "predictions": [int(pred[i])],
                "model_version": champion,
                "latency_ms": 3.0,
                "error": None,
                "ts": now[0],
            }
            for i in range(len(rows))
        ]
        assert core.add_records(records)["accepted"] == len(records)
        # The attack: every label the opposite of the answer the client got.
        poison = [
            {"request_id": r["request_id"], "label": 1 - r["predictions"][0]} for r in records
        ]
        assert core.add_feedback(poison, source="client")["accepted"] == len(poison)
        now[0] += 30
        core.evaluate()
        fired, reason, numbers = core.should_retrain()
        if fired:
            break
    assert fired, core.status()["hysteresis"]
    assert numbers["detectors"] == ["accuracy"]

    # What the monitor trains on after an accuracy drop: the labels after the change point.
    Xr, yr, _ = core.labelled_after_drop()
    retraining = load_retraining_config()
    result = retrain(
        cfg,
        mlflow_uri,
        Xr,
        yr,
        trigger={"reason": reason, "numbers": numbers},
        margin=retraining.margin,
        holdout_fraction=retraining.holdout_fraction,
        recent_weight=retraining.recent_weight,
        base_data=retraining.base_data,
        base_tolerance=retraining.base_tolerance,
    )

    assert result.rows_base == 0  # the base data was left out of training (accuracy trigger)
    # The poisoned winner learned the flipped labels: it "beats" the champion on them ...
    assert result.challenger_accuracy >= result.champion_accuracy + retraining.margin
    # ... and fails on data the labels cannot change.
    assert result.base_accuracy < cfg.min_score
    assert result.champion_base_accuracy >= cfg.min_score
    assert not result.registered and result.version is None
    assert result.decision.startswith("not registered")
    assert f"below min_score {cfg.min_score}" in result.decision

    versions = client.search_model_versions(f"name = '{NAME}'")
    assert [str(v.version) for v in versions] == [champion]
    assert registry.alias_version(client, NAME, registry.CHAMPION) == champion
    assert registry.alias_version(client, NAME, registry.CHALLENGER) is None
    run = client.get_run(result.parent_run_id)
    assert run.data.metrics["base_holdout_accuracy"] == pytest.approx(result.base_accuracy)
    assert run.data.metrics["champion_base_holdout_accuracy"] == pytest.approx(
        result.champion_base_accuracy
    )
    assert run.data.tags["mlops.decision"] == result.decision
