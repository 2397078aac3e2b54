"""Every model family the search can pick is logged and loads back by registry URI (no Ray).

MLflow saves scikit-learn models with skops by default, which refuses tree ensembles unless
their Tree type is trusted at logging time: a forest winning a retraining once failed here."""

import mlflow
import numpy as np
import pytest

from training import registry
from training.data import load_dataset
from training.search import FAMILY_TASK, SPACE
from training.train import fit_and_log

CONFIGS = {
    "logistic_regression": {"lr_C": 1.0},
    "random_forest": {"rf_n_estimators": 5, "rf_max_depth": 3, "rf_min_samples_leaf": 2},
    "gradient_boosting": {"gb_n_estimators": 5, "gb_learning_rate": 0.1, "gb_max_depth": 2},
}


def test_configs_cover_every_classifier_family():
    """Regressor families are logged and loaded on a regression dataset in
    tests/unit/test_regression_model_logging.py."""
    classifiers = {f for f in SPACE if FAMILY_TASK[f] == "classification"}
    assert set(CONFIGS) == classifiers


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One registry for the module (creating an MLflow database takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('families') / 'mlflow.db'}"


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_family_logs_registers_and_loads_by_uri(family, uri):
    registry.use_tracking_uri(uri)
    client = registry.get_client(uri)
    exp = registry.ensure_experiment(client, "families", uri)
    X, y = load_dataset("breast_cancer")
    X, y = X.iloc[:200], y.iloc[:200]
    with mlflow.start_run(experiment_id=exp):
        model, info = fit_and_log(
            {"family": family, "seed": 0, **CONFIGS[family]},
            X,
            y,
            reference_size=50,
            seed=0,
            dataset_name="breast_cancer",
        )
    version = mlflow.register_model(info.model_uri, family).version
    loaded = registry.load_model(uri, family, str(version))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
