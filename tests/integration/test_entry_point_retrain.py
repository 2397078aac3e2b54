"""Retraining a champion our training did not register, through a user's entry point
(`training.retrain.retrain` -> `retrain_with_entry_point`), with a real local Ray (Tune) and
the session's MLflow."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import Ridge

from configs import TrainingConfig
from training import registry
from training.recipe import is_ours
from training.retrain import retrain

pytestmark = pytest.mark.ray

NAME = "team_entry_point_ridge"
COLUMNS = ["a", "b", "c"]
SPEC = "tests.recipes:fit_ridge"


def rows(n: int, seed: int, coef: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, X @ np.asarray(coef) + rng.normal(0, 0.1, size=n)


@pytest.fixture
def foreign_champion(ray_cluster, mlflow_uri) -> str:
    """A Ridge a team registered (signature, no tags of ours) as champion of NAME."""
    X, y = rows(300, 0, (1.0, 1.0, 1.0))
    frame = pd.DataFrame(X, columns=COLUMNS)
    model = Ridge().fit(frame, y)
    registry.use_tracking_uri(mlflow_uri)
    client = registry.get_client(mlflow_uri)
    exp = registry.ensure_experiment(client, "foreign-models", mlflow_uri)
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(frame, model.predict(frame)),
            pip_requirements=["scikit-learn"],
        )
    version = str(mlflow.register_model(info.model_uri, NAME).version)
    registry.set_alias(client, NAME, registry.CHAMPION, version)
    return version


def config() -> TrainingConfig:
    return TrainingConfig(
        model_name=NAME, num_samples=2, max_concurrent_trials=2, trial_cpus=0.5, cv_folds=2
    )


def run(mlflow_uri: str, X: np.ndarray, y: np.ndarray, entry_point: str | None):
    return retrain(
        config(),
        mlflow_uri,
        X,
        y,
        trigger={"reason": "ks", "numbers": {"detectors": ["ks"]}},
        margin=0.02,
        rmse_margin=0.05,
        entry_point=entry_point,
        entry_point_space={"alpha": [0.01, 100.0]},
    )


def test_entry_point_retrains_a_foreign_champion_through_the_gate(foreign_champion, mlflow_uri):
    client = registry.get_client(mlflow_uri)
    # Without an entry point a foreign champion is not retrained with our families.
    X, y = rows(200, 1, (3.0, -1.0, 0.5))
    with pytest.raises(ValueError, match="not configured"):
        run(mlflow_uri, X, y, None)

    # The relation changed: the entry point's refit beats the champion on the hold-out.
    result = run(mlflow_uri, X, y, SPEC)
    assert result.registered, result.decision
    assert result.task == "regression" and result.rows_base == 0
    assert result.challenger_rmse < 0.95 * result.champion_rmse
    mv = client.get_model_version(NAME, result.version)
    assert not is_ours(mv.tags) and mv.tags["family"] == f"entry_point:{SPEC}"
    assert float(mv.tags["test_rmse"]) == pytest.approx(result.challenger_rmse, rel=1e-5)
    info = registry.version_info(client, NAME, result.version)
    assert info.has_signature and info.feature_names == COLUMNS
    # Challenger only: the RolloutController moves aliases.
    assert registry.alias_version(client, NAME, registry.CHAMPION) == foreign_champion
    model = mlflow.pyfunc.load_model(registry.model_uri(NAME, result.version))
    Xt, yt = rows(50, 2, (3.0, -1.0, 0.5))
    pred = model.predict(pd.DataFrame(Xt, columns=COLUMNS))
    assert np.sqrt(np.mean((pred - yt) ** 2)) < 0.5

    # Rows the champion already fits: the same recipe cannot beat it by the margin.
    X2, y2 = rows(200, 3, (1.0, 1.0, 1.0))
    again = run(mlflow_uri, X2, y2, SPEC)
    assert not again.registered and "does not beat the champion" in again.decision
