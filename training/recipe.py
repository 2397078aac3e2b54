"""Which retraining recipe a champion gets, and the user-given one for models we did not train.

Our Tune search only knows the model families of `training.search`; running it for a model
someone else registered (a LightGBM booster, a custom PythonModel) would replace that model
with one of another family, trained on a dataset it may never have seen. So:

- ``ours``: the version carries the tag ``family`` naming one of our families (`register`
  in training/train.py sets it): our own retraining (`training.retrain.retrain`);
- ``entry_point``: otherwise, when ``retraining.entry_point`` names a ``module:function``:
  a Tune search over ``entry_point_space`` whose trials call ``fn(train_frame, config)``
  (`training.retrain.retrain` branches to `retrain_with_entry_point`);
- ``not configured``: neither; drift still raises the alert, and nothing is retrained.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split

from configs import TrainingConfig
from configs.settings import ENTRY_POINT_RE
from training.search import FAMILY_TASK, REGRESSION

TARGET = "target"  # the label column of the frame an entry point gets

OURS, ENTRY_POINT, NOT_CONFIGURED = "ours", "entry_point", "not configured"


def is_ours(tags: Mapping[str, str] | None) -> bool:
    """Whether our training registered the version with these tags."""
    return (tags or {}).get("family") in FAMILY_TASK


def recipe_for(tags: Mapping[str, str] | None, entry_point: str | None) -> str:
    """``ours``, ``entry_point`` or ``not configured`` (see the module docstring)."""
    if is_ours(tags):
        return OURS
    return ENTRY_POINT if entry_point else NOT_CONFIGURED


def load_entry_point(spec: str) -> Callable[..., Any]:
    """The function ``spec`` ("package.module:function") names; a ValueError when it does
    not resolve to a callable."""
    if not ENTRY_POINT_RE.fullmatch(spec):
        raise ValueError(f"entry point must look like 'package.module:function', got {spec!r}")
    module, _, name = spec.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"entry point {spec!r} is not a function")
    return fn


def predict_values(model: Any, X: pd.DataFrame) -> np.ndarray:
    """A model's predictions as one value per row (a one-column frame or 2-D array is
    flattened; more columns are refused: the gate needs one answer per row)."""
    pred = model.predict(X)
    arr = np.asarray(pred.to_numpy() if hasattr(pred, "to_numpy") else pred)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != len(X):
        raise ValueError(f"the model answers shape {arr.shape} for {len(X)} rows, need one each")
    return arr


def score(task: str, y: np.ndarray, pred: np.ndarray) -> float:
    """The task's metric: accuracy (higher is better) or RMSE (lower is better)."""
    if task == REGRESSION:
        return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(pred, float)) ** 2)))
    return float(np.mean([str(a) == str(b) for a, b in zip(y, pred, strict=True)]))


def entry_trial(
    config: dict[str, Any], spec: str, frame: pd.DataFrame, task: str, seed: int
) -> None:
    """One Tune trial: fit ``spec`` on part of the training frame, report the task's metric
    on the rest (the retraining's hold-out stays out of the search; it is the gate's)."""
    from ray import tune

    fit, val = train_test_split(frame, test_size=0.25, random_state=seed)
    model = load_entry_point(spec)(fit.reset_index(drop=True), dict(config))
    val_X = val.drop(columns=[TARGET])
    tune.report({"score": score(task, val[TARGET].to_numpy(), predict_values(model, val_X))})


def entry_point_search(
    cfg: TrainingConfig,
    spec: str,
    space: dict[str, list[Any]],
    frame: pd.DataFrame,
    task: str,
    *,
    tracking_uri: str,
    parent_run_id: str,
) -> tuple[dict[str, Any], float, int]:
    """Tune over ``space`` (``tune.choice`` per param, ``cfg.num_samples`` trials; one trial
    when the space is empty); every trial an MLflow child run of ``parent_run_id``. Returns
    the best trial config, its validation score and the number of trials."""
    # Ray Tune is imported here, not at the top: the DriftMonitor imports this module for
    # `recipe_for`, and a replica pays its imports when it starts.
    from ray import tune

    from training.train import run_tuner

    load_entry_point(spec)  # fail here, not in every trial
    best, n_trials = run_tuner(
        cfg,
        tune.with_parameters(entry_trial, spec=spec, frame=frame, task=task, seed=cfg.seed),
        {k: tune.choice(list(v)) for k, v in space.items()},
        metric="score",
        mode="min" if task == REGRESSION else "max",
        num_samples=cfg.num_samples if space else 1,
        name=f"{cfg.model_name}-entry-{int(time.time())}",
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
    )
    return dict(best.config), float(best.metrics["score"]), n_trials


class FittedModel(mlflow.pyfunc.PythonModel):
    """A fitted model that is not a scikit-learn estimator, as an MLflow pyfunc: its
    ``predict`` answers a DataFrame of the feature columns."""

    def __init__(self, model: Any):
        self.model = model

    def predict(self, context, model_input, params=None):
        return self.model.predict(model_input)


def log_fitted(model: Any, X: pd.DataFrame) -> Any:
    """Log ``model`` to the active run with a signature (and a 2-row input example):
    scikit-learn flavor for an estimator, pyfunc (`FittedModel`) for anything else."""
    signature = infer_signature(X, predict_values(model, X))
    if isinstance(model, BaseEstimator):
        return mlflow.sklearn.log_model(
            model, name="model", signature=signature, input_example=X.head(2)
        )
    return mlflow.pyfunc.log_model(
        name="model", python_model=FittedModel(model), signature=signature, input_example=X.head(2)
    )
