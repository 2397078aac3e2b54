"""Every regressor family the search can pick is logged with the skops types it needs and
loads back by registry URI through safe loading (no Ray): the allow-lists cover it."""

import mlflow
import numpy as np
import pytest

from training import registry
from training.data import PREDICTION_COLUMN, load_dataset
from training.search import FAMILY_TASK
from training.train import fit_and_log

CONFIGS = {
    "ridge": {"ridge_alpha": 1.0},
    "random_forest_regressor": {
        "rfr_n_estimators": 5,
        "rfr_max_depth": 3,
        "rfr_min_samples_leaf": 2,
    },
    "gradient_boosting_regressor": {
        "gbr_n_estimators": 5,
        "gbr_learning_rate": 0.1,
        "gbr_max_depth": 2,
    },
}


def test_configs_cover_every_regressor_family():
    assert set(CONFIGS) == {f for f, task in FAMILY_TASK.items() if task == "regression"}


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('regressors') / 'mlflow.db'}"


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_regressor_logs_registers_and_loads_by_uri(family, uri):
    registry.use_tracking_uri(uri)
    client = registry.get_client(uri)
    exp = registry.ensure_experiment(client, "regressors", uri)
    X, y = load_dataset("diabetes")
    X, y = X.iloc[:200], y.iloc[:200]
    with mlflow.start_run(experiment_id=exp) as run:
        model, info = fit_and_log(
            {"family": family, "seed": 0, **CONFIGS[family]},
            X,
            y,
            reference_size=50,
            seed=0,
            dataset_name="diabetes",
            task="regression",
        )
    version = mlflow.register_model(info.model_uri, family).version
    loaded = registry.load_model(uri, family, str(version))
    np.testing.assert_allclose(loaded.predict(X), model.predict(X))
    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path=registry.REFERENCE_ARTIFACT, tracking_uri=uri
    )
    with open(path) as fh:
        header = fh.readline().strip()
    assert header.endswith(f"{registry.LABEL_COLUMN},{PREDICTION_COLUMN}")
