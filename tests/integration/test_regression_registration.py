"""A regressor trains with Ray Tune really searching and registers with its task and errors."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from training import registry
from training.data import load_dataset
from training.train import PREDICTION_COLUMN, holdout_split, train

pytestmark = pytest.mark.ray

MODEL = "diabetes_regressor_test"


@pytest.fixture(scope="module")
def regression_config(training_config):
    cfg = training_config.model_copy(
        update={"dataset": "diabetes", "task": "auto", "model_name": MODEL, "num_samples": 4}
    )
    return type(cfg).model_validate(cfg.model_dump())


@pytest.fixture(scope="module")
def trained_regressor(ray_cluster, mlflow_uri, regression_config):
    return train(regression_config, mlflow_uri)


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


def test_a_worse_regressor_is_rolled_back_by_the_error_test_over_http(
    trained_regressor, serve_app, mlflow_uri, regression_config
):
    """A challenger that predicts about the mean (a ridge with a huge penalty) serves without
    errors and as fast as the champion; only the labels show it is worse: the canary's
    one-sided Welch t-test on absolute errors rolls it back, over real HTTP, while every
    request is answered."""
    import json
    import threading

    import httpx
    from mlflow.models import infer_signature
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from configs import RolloutConfig
    from tests.conftest import ADMIN_TOKEN, FEEDBACK_TOKEN
    from tests.helpers import wait_until

    champion = trained_regressor.version
    client = registry.get_client(mlflow_uri)
    registry.set_alias(client, MODEL, registry.CHAMPION, champion)
    X, y = load_dataset("diabetes")
    worse = make_pipeline(StandardScaler(), Ridge(alpha=1e5)).fit(X, y)
    registry.use_tracking_uri(mlflow_uri)
    with mlflow.start_run(run_name="worse-regressor"):
        info = mlflow.sklearn.log_model(
            worse,
            name="model",
            signature=infer_signature(X, worse.predict(X)),
            pip_requirements=["scikit-learn"],
        )
    tags = {
        "feature_names": json.dumps(list(X.columns)),
        "classes": "[]",
        "task": "regression",
        "family": "ridge",
        "test_rmse": f"{np.sqrt(np.mean((worse.predict(X) - y) ** 2)):.6f}",
    }
    bad = str(mlflow.register_model(info.model_uri, MODEL, tags=tags).version)

    rollout = RolloutConfig(
        steps=[25, 50, 100],
        min_requests=30,
        min_step_seconds=1,
        analysis_interval_s=0.5,
        min_labelled=40,
        latency_p99_floor_ms=2000,
    )
    url = serve_app(name="raymlops-regression", model_name=MODEL, rollout=rollout)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    feedback = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
    statuses: list[int] = []
    stop = threading.Event()

    def traffic(k: int) -> None:
        with httpx.Client(timeout=30) as c:
            i = k
            while not stop.is_set():
                r = c.post(f"{url}/predict", json={"features": [X.iloc[i % len(X)].tolist()]})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    label = {
                        "request_id": r.json()["request_id"],
                        "label": float(y.iloc[i % len(X)]),
                    }
                    c.post(f"{url}/feedback", json=label, headers=feedback)
                i += 3

    threads = [threading.Thread(target=traffic, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        r = httpx.post(f"{url}/admin/rollout", json={"version": bad}, headers=admin, timeout=120)
        assert r.status_code == 200, r.text

        def status():
            return httpx.get(f"{url}/admin/rollout", headers=admin, timeout=30).json()

        wait_until(lambda: status()["rollout"] is None, 180, what="rollback", context=status)
    finally:
        stop.set()
        for t in threads:
            t.join()
    final = status()
    assert final["champion"] == champion
    last = final["history"][-1]
    assert last["event"] == "rolled_back" and last["version"] == bad, last
    assert "mean absolute error" in last["reason"] and "Welch" in last["reason"], last
    assert registry.alias_version(client, MODEL, registry.CHAMPION) == champion
    assert registry.alias_version(client, MODEL, registry.CHALLENGER) is None
    assert set(statuses) == {200}, sorted(set(statuses))
