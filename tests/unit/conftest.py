"""Fixtures of the unit tests that need an MLflow registry (a SQLite file, no server)."""

from __future__ import annotations

import shutil

import mlflow
import pytest
from sklearn.dummy import DummyClassifier

from training import registry

NAME = "m"  # the registered model the rollout tests work on


@pytest.fixture(scope="session")
def template(tmp_path_factory):
    """One migrated registry with three versions of ``NAME``, v1 champion; each test gets a
    copy (`client`), since migrating a new SQLite registry takes seconds."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    registry.use_tracking_uri(uri)
    c = registry.get_client(uri)
    exp = registry.ensure_experiment(c, "t", uri)
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.sklearn.log_model(
            DummyClassifier().fit([[0], [1]], [0, 1]),
            name="model",
            pip_requirements=["scikit-learn"],
        )
    tags = {"feature_names": '["x"]', "classes": "[0, 1]", "test_accuracy": "0.9"}
    for _ in range(3):
        mlflow.register_model(info.model_uri, NAME, tags=tags)
    registry.set_alias(c, NAME, registry.CHAMPION, "1")
    return root / "mlflow.db"


@pytest.fixture
def client(template, tmp_path):
    """A registry client on a fresh copy of `template`."""
    db = tmp_path / "mlflow.db"
    shutil.copy(template, db)
    return registry.get_client(f"sqlite:///{db}")
