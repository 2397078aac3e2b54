"""Train with Ray Tune, log every trial to MLflow, refit the winner, register it.

The pieces (`search`, `fit_and_log`, `register`) are separate so that retraining can reuse
them with other data and another registration gate.

Two tasks share the flow. Classification: Tune maximises cross-validated accuracy and a
champion needs held-out accuracy >= ``min_score``. Regression (``task: regression``, or a
float target with many distinct values under ``task: auto``): Tune minimises cross-validated
RMSE, the hold-out RMSE, MAE and R^2 are logged, and a champion needs held-out R^2 >=
``min_r2`` (relative to the target's variance, so one threshold fits any unit). Every version
carries the tag ``task``; a regressor's reference sample also holds the model's own
predictions (`PREDICTION_COLUMN`), which the drift monitor's KS test on predictions uses.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import ray
from mlflow.models import infer_signature
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.search import BasicVariantGenerator
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from configs import PROJECT_ROOT, TrainingConfig
from training import registry
from training.data import PREDICTION_COLUMN, load_dataset, resolve_task
from training.search import (
    REGRESSION,
    SKOPS_TRUSTED_TYPES,
    TUNE_METRIC,
    build_estimator,
    check_families,
    family_params,
    search_space,
    trainable,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training run produced and what the registry did with it."""

    parent_run_id: str
    family: str
    params: dict[str, Any]
    cv_accuracy: float | None
    test_accuracy: float | None
    test_f1: float | None
    trials: int
    version: str | None = None
    aliases: list[str] = field(default_factory=list)
    decision: str = ""
    task: str = "classification"
    cv_rmse: float | None = None
    test_rmse: float | None = None
    test_mae: float | None = None
    test_r2: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_ray() -> None:
    """Join the running Ray cluster (``ray start``, or the caller's), else start a local one."""
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=True)


def search(
    cfg: TrainingConfig,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    tracking_uri: str,
    parent_run_id: str,
    task: str = "classification",
) -> tuple[dict[str, Any], float, int]:
    """Run the Tune search over the families of ``task``; every trial becomes an MLflow child
    run of ``parent_run_id``.

    Returns the best config, its cross-validated score (accuracy for classification, RMSE
    for regression) and the number of trials.
    """
    families = cfg.families_for(task)
    check_families(families, task)
    metric, mode = TUNE_METRIC[task]
    best, n_trials = run_tuner(
        cfg,
        tune.with_parameters(trainable, X=X.to_numpy(), y=y.to_numpy(), folds=cfg.cv_folds),
        search_space(families, cfg.seed),
        metric=metric,
        mode=mode,
        num_samples=cfg.num_samples,
        name=f"{cfg.model_name}-{int(time.time())}",
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
    )
    return family_params(best.config) | {"seed": cfg.seed}, best.metrics[metric], n_trials


def run_tuner(
    cfg: TrainingConfig,
    trainable: Any,
    param_space: dict[str, Any],
    *,
    metric: str,
    mode: str,
    num_samples: int,
    name: str,
    tracking_uri: str,
    parent_run_id: str,
) -> tuple[Any, int]:
    """One Ray Tune search with the training config's resources, concurrency and seed; every
    trial an MLflow child run of ``parent_run_id``. Returns the best result (a RuntimeError
    when every trial failed) and the number of trials."""
    ensure_ray()
    storage = Path(cfg_storage_path())
    storage.mkdir(parents=True, exist_ok=True)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cfg.trial_cpus}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=num_samples,
            # Tune ignores TuneConfig.max_concurrent_trials for a SearchGenerator; the limit
            # goes on the generator itself.
            search_alg=BasicVariantGenerator(
                random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials
            ),
            # A new trial takes over a finished one's actor: no process start and imports
            # per trial (the trainable keeps no state between calls).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            verbose=1,
            callbacks=[
                MLflowLoggerCallback(
                    tracking_uri=tracking_uri,
                    registry_uri=tracking_uri,
                    experiment_name=cfg.experiment_name,
                    tags={"mlflow.parentRunId": parent_run_id},
                    save_artifact=False,
                )
            ],
        ),
    )
    results = tuner.fit()
    ok = [r for r in results if r.error is None and r.metrics and metric in r.metrics]
    if not ok:
        errors = [str(r.error) for r in results if r.error is not None][:3]
        raise RuntimeError(f"every Tune trial failed; first errors: {errors}")
    sign = 1.0 if mode == "max" else -1.0
    return max(ok, key=lambda r: sign * r.metrics[metric]), len(results)


def cfg_storage_path() -> str:
    return str(PROJECT_ROOT / ".mlops" / "ray_results")


def fit_and_log(
    config: dict[str, Any],
    X_train: pd.DataFrame,
    y_train: pd.Series,
    *,
    reference_size: int,
    seed: int,
    dataset_name: str,
    reference: tuple[pd.DataFrame, pd.Series] | None = None,
    task: str = "classification",
) -> tuple[Pipeline, Any]:
    """Refit ``config`` on the training split and log the model to the active run, with its
    signature, an input example, the dataset and a reference sample for drift detection
    (drawn from ``reference`` when given, else from the training rows; a regressor's also
    holds its predictions on those rows, column `PREDICTION_COLUMN`)."""
    model = build_estimator(config).fit(X_train, y_train)
    signature = infer_signature(X_train, model.predict(X_train))
    train_frame = X_train.assign(target=y_train.to_numpy())
    mlflow.log_input(
        mlflow.data.from_pandas(train_frame, name=dataset_name, targets="target"),
        context="training",
    )
    ref_X, ref_y = reference if reference is not None else (X_train, y_train)
    picked = ref_X.sample(n=min(reference_size, len(ref_X)), random_state=seed)
    reference = picked.assign(**{registry.LABEL_COLUMN: ref_y.loc[picked.index].to_numpy()})
    if task == REGRESSION:
        reference[PREDICTION_COLUMN] = model.predict(picked)
    with _tmpdir() as tmp:
        path = Path(tmp) / Path(registry.REFERENCE_ARTIFACT).name
        reference.to_csv(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(registry.REFERENCE_ARTIFACT).parent))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=X_train.head(2),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=SKOPS_TRUSTED_TYPES[config["family"]] or None,
        # Every family is a scikit-learn pipeline in skops: these pins are the whole runtime
        # need. MLflow's inference instead loads the model in a subprocess (about 4.5 s a
        # registration here) and lists whatever that environment imported (pytest, rich).
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
    )
    return model, info


def _tmpdir():
    import tempfile

    return tempfile.TemporaryDirectory(prefix="raymlops-")


def holdout_split(
    cfg: TrainingConfig, X: pd.DataFrame, y: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """``X_train, X_test, y_train, y_test``: the held-out split a champion is scored on. The
    same seed and size in training and retraining, so retraining's base hold-out is data the
    champion never saw either."""
    stratify = None if resolve_task(cfg.task, y) == REGRESSION else y
    return train_test_split(X, y, test_size=cfg.test_size, random_state=cfg.seed, stratify=stratify)


def evaluate(
    model: Pipeline, X: pd.DataFrame, y: pd.Series, task: str = "classification"
) -> dict[str, float]:
    """Hold-out scores: accuracy and macro F1 for a classifier; RMSE, MAE and R^2 for a
    regressor."""
    pred = model.predict(X)
    if task == REGRESSION:
        return regression_scores(np.asarray(y, dtype=float), np.asarray(pred, dtype=float))
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, average="macro")),
    }


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R^2 of ``pred`` against ``y``."""
    return {
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
        "mae": float(mean_absolute_error(y, pred)),
        "r2": float(r2_score(y, pred)),
    }


def metric_tags(task: str, metrics: dict[str, float]) -> dict[str, str]:
    """The hold-out scores a version carries as tags (the drift monitor's baseline)."""
    if task == REGRESSION:
        return {f"test_{k}": f"{metrics[k]:.6f}" for k in ("rmse", "mae", "r2")}
    return {"test_accuracy": f"{metrics['accuracy']:.6f}"}


def passes_floor(cfg: TrainingConfig, task: str, scores: dict[str, float]) -> tuple[bool, str]:
    """Whether held-out ``scores`` reach the registration floor, and the numbers as words."""
    if task == REGRESSION:
        ok = scores["r2"] >= cfg.min_r2
        return ok, f"held-out R^2 {scores['r2']:.4f} {'>=' if ok else '<'} min_r2 {cfg.min_r2}"
    ok = scores["accuracy"] >= cfg.min_score
    sign = ">=" if ok else "<"
    return ok, f"held-out accuracy {scores['accuracy']:.4f} {sign} min_score {cfg.min_score}"


def version_task(client, model_name: str, version: str) -> str:
    """The task of a registered version: tag ``mlops.task`` (a user's override), then
    ``task`` (ours); versions from before the tag existed are classifiers."""
    tags = client.get_model_version(model_name, version).tags or {}
    return tags.get("mlops.task") or tags.get("task") or "classification"


def register(
    client,
    cfg: TrainingConfig,
    model_info,
    *,
    feature_names: list[str],
    classes: list[Any],
    metrics: dict[str, float],
    family: str,
    extra_tags: dict[str, str] | None = None,
    task: str = "classification",
) -> str:
    """Register the logged model; the facts serving needs go into version tags."""
    tags = {
        "feature_names": json.dumps(feature_names),
        "classes": json.dumps(classes),
        **metric_tags(task, metrics),
        "family": family,
        "task": task,
        **(extra_tags or {}),
    }
    mv = mlflow.register_model(model_info.model_uri, cfg.model_name, tags=tags)
    return str(mv.version)


def train(
    cfg: TrainingConfig,
    tracking_uri: str,
    *,
    data: tuple[pd.DataFrame, pd.Series] | None = None,
    set_champion: bool = False,
    run_tags: dict[str, str] | None = None,
) -> TrainResult:
    """Search, refit, evaluate on a held-out split, register; alias ``champion`` when there is
    none yet (or ``set_champion``) and the held-out score reaches the floor (`passes_floor`).
    """
    registry.use_tracking_uri(tracking_uri)
    client = registry.get_client(tracking_uri)
    exp_id = registry.ensure_experiment(client, cfg.experiment_name, tracking_uri)
    X, y = data if data is not None else load_dataset(cfg.dataset, cfg.target)
    task = resolve_task(cfg.task, y)
    check_families(cfg.families_for(task), task)
    champion = registry.alias_version(client, cfg.model_name, registry.CHAMPION)
    if champion is not None and version_task(client, cfg.model_name, champion) != task:
        raise ValueError(
            f"{cfg.model_name}@champion (v{champion}) is a "
            f"{version_task(client, cfg.model_name, champion)} model and this is {task}: "
            "register it under another --model-name"
        )
    if task == REGRESSION:
        y = y.astype("float64")
    X_train, X_test, y_train, y_test = holdout_split(cfg, X, y)
    with mlflow.start_run(
        experiment_id=exp_id,
        run_name=f"train-{cfg.model_name}",
        tags={"mlops.kind": "training", **(run_tags or {})},
    ) as parent:
        parent_id = parent.info.run_id
        mlflow.log_params(
            {
                "dataset": cfg.dataset,
                "task": task,
                "families": ",".join(cfg.families_for(task)),
                "num_samples": cfg.num_samples,
                "cv_folds": cfg.cv_folds,
                "rows_train": len(X_train),
                "rows_test": len(X_test),
            }
        )
        best, cv_score, n_trials = search(
            cfg, X_train, y_train, tracking_uri=tracking_uri, parent_run_id=parent_id, task=task
        )
        mlflow.log_params({f"best_{k}": v for k, v in best.items()})
        model, info = fit_and_log(
            best,
            X_train,
            y_train,
            reference_size=cfg.reference_sample_size,
            seed=cfg.seed,
            dataset_name=cfg.dataset if len(cfg.dataset) < 64 else Path(cfg.dataset).name,
            task=task,
        )
        scores = evaluate(model, X_test, y_test, task)
        cv_name = TUNE_METRIC[task][0]
        mlflow.log_metrics({cv_name: cv_score, **{f"test_{k}": v for k, v in scores.items()}})
        classes = (
            []
            if task == REGRESSION
            else [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
        )
        version = register(
            client,
            cfg,
            info,
            feature_names=list(X.columns),
            classes=classes,
            metrics=scores,
            family=best["family"],
            extra_tags={cv_name: f"{cv_score:.6f}"},
            task=task,
        )
        result = train_result(parent_id, best, task, cv_score, scores, n_trials, version)
        champion = registry.alias_version(client, cfg.model_name, registry.CHAMPION)
        ok, floor = passes_floor(cfg, task, scores)
        if not ok:
            result.decision = f"registered v{version} without alias: {floor}"
        elif champion is None or set_champion:
            registry.set_alias(client, cfg.model_name, registry.CHAMPION, version)
            result.aliases.append(registry.CHAMPION)
            result.decision = f"v{version} is now champion (previous: {champion or 'none'})"
        else:
            result.decision = (
                f"registered v{version}; champion stays v{champion} "
                "(pass --set-champion, or roll it out as a challenger)"
            )
        mlflow.set_tag("mlops.decision", result.decision)
        log.info(result.decision)
    return result


def train_result(
    parent_id: str,
    best: dict[str, Any],
    task: str,
    cv_score: float,
    scores: dict[str, float],
    trials: int,
    version: str,
) -> TrainResult:
    """The `TrainResult` of one run, with the scores of its task (the others None)."""
    result = TrainResult(
        parent_run_id=parent_id,
        family=best["family"],
        params=best,
        cv_accuracy=None,
        test_accuracy=None,
        test_f1=None,
        trials=trials,
        version=version,
        task=task,
    )
    if task == REGRESSION:
        result.cv_rmse = cv_score
        result.test_rmse, result.test_mae, result.test_r2 = (
            scores["rmse"],
            scores["mae"],
            scores["r2"],
        )
    else:
        result.cv_accuracy = cv_score
        result.test_accuracy, result.test_f1 = scores["accuracy"], scores["f1_macro"]
    return result
