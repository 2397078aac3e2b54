"""A regressor trains with Ray Tune really searching and registers with its task and errors."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import REGRESSOR
from training import registry
from training.data import load_dataset
from training.train import PREDICTION_COLUMN, holdout_split, train

pytestmark = pytest.mark.ray

MODEL = REGRESSOR


def test_regressor_registers_as_champion_with_task_and_error_metrics(
    trained_regressor, mlflow_uri, regression_config
):
    res = trained_regressor
    client = registry.get_client(mlflow_uri)
    assert res.task == "regression"
    assert res.test_accuracy is None and res.cv_accuracy is None
    assert res.test_r2 >= regression_config.min_r2
    assert registry.alias_version(client, MODEL, registry.CHAMPION) == res.version

    mv = client.get_model_version(MODEL, res.version)
    assert mv.tags["task"] == "regression"
    assert float(mv.tags["test_rmse"]) == pytest.approx(res.test_rmse, rel=1e-5)
    assert float(mv.tags["test_mae"]) == pytest.approx(res.test_mae, rel=1e-5)
    assert "test_accuracy" not in mv.tags
    assert mv.tags["classes"] == "[]"

    run = client.get_run(res.parent_run_id)
    assert run.data.metrics["test_rmse"] == pytest.approx(res.test_rmse)
    assert run.data.metrics["test_mae"] == pytest.approx(res.test_mae)
    assert run.data.metrics["cv_rmse"] == pytest.approx(res.cv_rmse)
    assert 0 < res.test_mae <= res.test_rmse

    # Tune really searched: one child run per trial, each with its CV RMSE, only regressors.
    exp = client.get_experiment_by_name(regression_config.experiment_name)
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{res.parent_run_id}'"
    )
    assert len(children) == regression_config.num_samples
    assert all("cv_rmse" in r.data.metrics and "cv_mae" in r.data.metrics for r in children)
    assert {r.data.params["family"] for r in children} <= set(regression_config.regression_families)
    # The winner is the trial with the lowest CV RMSE (Tune minimised it).
    assert res.cv_rmse == pytest.approx(min(r.data.metrics["cv_rmse"] for r in children))


def test_registered_regressor_reproduces_its_holdout_errors_and_reference_predictions(
    trained_regressor, mlflow_uri, regression_config
):
    model = registry.load_model(mlflow_uri, MODEL, trained_regressor.version)
    X, y = load_dataset("diabetes")
    _, X_test, _, y_test = holdout_split(regression_config, X, y)
    err = model.predict(X_test) - y_test.to_numpy()
    assert np.sqrt(np.mean(err**2)) == pytest.approx(trained_regressor.test_rmse)
    assert np.mean(np.abs(err)) == pytest.approx(trained_regressor.test_mae)

    # The reference sample holds the model's own predictions (KS reference for drift).
    path = mlflow.artifacts.download_artifacts(
        run_id=trained_regressor.parent_run_id,
        artifact_path=registry.REFERENCE_ARTIFACT,
        tracking_uri=mlflow_uri,
    )
    ref = pd.read_csv(path)
    assert list(ref.columns) == list(X.columns) + [registry.LABEL_COLUMN, PREDICTION_COLUMN]
    features = ref[list(X.columns)]
    assert np.allclose(ref[PREDICTION_COLUMN], model.predict(features))


def test_a_classifier_run_refuses_to_replace_a_regression_champion(
    trained_regressor, mlflow_uri, regression_config
):
    cfg = regression_config.model_copy(update={"dataset": "breast_cancer"})
    with pytest.raises(ValueError, match="is a regression model and this is classification"):
        train(cfg, mlflow_uri)


def test_drift_monitor_reads_a_regressors_reference_and_baseline_rmse(
    trained_regressor, mlflow_uri
):
    """What the DriftMonitor loads for a regression champion, fed to the real core with the
    model's own answers on the dataset: both regression detectors run and stay quiet."""
    from configs import DriftConfig
    from monitoring.core import DriftMonitorCore
    from monitoring.monitor import reference_for

    client = registry.get_client(mlflow_uri)
    ref = reference_for(client, MODEL, trained_regressor.version)
    assert ref["task"] == "regression" and ref["classes"] is None
    assert ref["baseline_rmse"] == pytest.approx(trained_regressor.test_rmse, rel=1e-5)
    assert ref["baseline_accuracy"] is None
    assert len(ref["reference_predictions"]) == len(ref["reference_features"])

    core = DriftMonitorCore(DriftConfig(min_samples=100, min_labelled=100, feedback_grace_s=0))
    core.set_reference(trained_regressor.version, **ref)
    model = registry.load_model(mlflow_uri, MODEL, trained_regressor.version)
    X, y = load_dataset("diabetes")
    pred = model.predict(X)
    records = [
        {
            "request_id": f"q{i}",
            "features": X.iloc[i : i + 1].to_numpy().tolist(),
            "predictions": [float(pred[i])],
            "model_version": trained_regressor.version,
        }
        for i in range(len(X))
    ]
    assert core.add_records(records)["accepted"] == len(X)
    labels = [{"request_id": f"q{i}", "label": float(y.iloc[i])} for i in range(len(X))]
    assert core.add_feedback(labels)["accepted"] == len(X)
    rep = core.evaluate()
    assert rep.task == "regression"
    assert rep.prediction_ks is not None and not rep.fired["prediction_ks"], rep.reasons
    assert rep.error is not None and not rep.fired["error"], rep.reasons
    assert rep.error.rmse == pytest.approx(np.sqrt(np.mean((pred - y.to_numpy()) ** 2)))


def test_retraining_a_regressor_registers_a_challenger_that_learned_the_new_target(
    trained_regressor, mlflow_uri, regression_config
):
    """The target moved up by 25 (a concept change the champion cannot know): retraining on
    base + recent rows cuts the recent hold-out RMSE by more than the margin and registers a
    regression challenger, without moving any alias."""
    from training.retrain import retrain

    X, y = load_dataset("diabetes")
    X_train, _, y_train, _ = holdout_split(regression_config, X, y)
    recent_X = X_train.iloc[:300].to_numpy()
    recent_y = y_train.iloc[:300].to_numpy() + 25.0
    res = retrain(
        regression_config,
        mlflow_uri,
        recent_X,
        recent_y,
        trigger={"reason": "test", "numbers": {"detectors": ["prediction_ks"]}},
        margin=0.02,
        rmse_margin=0.02,
        base_rmse_tolerance=0.5,
    )
    assert res.task == "regression" and res.rows_base > 0
    assert res.champion_version == trained_regressor.version
    assert res.registered, res.decision
    assert res.challenger_rmse <= res.champion_rmse * 0.98
    assert res.base_r2 >= regression_config.min_r2
    client = registry.get_client(mlflow_uri)
    mv = client.get_model_version(MODEL, res.version)
    assert mv.tags["task"] == "regression"
    assert float(mv.tags["test_rmse"]) == pytest.approx(res.challenger_rmse, rel=1e-5)
    assert registry.alias_version(client, MODEL, registry.CHAMPION) == trained_regressor.version
