"""Retraining on drift: base data plus recent labelled feedback, the same Tune search, and a
registration gate against the champion on two hold-outs:

- a held-out slice of the *recent* labelled data: the winner must beat the champion there by
  ``margin`` (it learned what changed);
- the base dataset's own hold-out (the split `training.train` holds out), which no
  ``/feedback`` label can change: the winner must reach ``base_min_score`` there (by default
  the training config's ``min_score``) and stay within ``base_tolerance`` of the champion.
  Labels are an input from outside; a client that posts flipped labels can make the recent
  hold-out say anything, but not this.
  The gate applies even when the base data is left out of training (after an accuracy drop):
  a concept change that really contradicts the base labels therefore needs an operator to
  widen ``base_tolerance`` and lower ``base_min_score`` (or to register the model by hand).

A regressor (the task of the base dataset, `training.data.resolve_task`) goes through the same
flow with its error metric: on the recent hold-out its RMSE must be at most
``(1 - rmse_margin)`` times the champion's; on the base hold-out its R^2 must reach
``base_min_r2`` (by default the training config's ``min_r2``) and its RMSE stay within
``(1 + base_rmse_tolerance)`` times the champion's (`regression_gate`).

`retrain` is plain Python (it needs Ray for Tune); the DriftMonitor runs it as one Ray task.
It registers a winner and returns its version; it never moves an alias: the RolloutController
(the only writer of aliases) starts the canary of that version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from configs import TrainingConfig
from training import registry
from training.data import load_dataset, resolve_task
from training.recipe import (
    entry_point_search,
    is_ours,
    load_entry_point,
    log_fitted,
    predict_values,
    score,
)
from training.search import REGRESSION
from training.train import (
    evaluate,
    fit_and_log,
    holdout_split,
    register,
    regression_scores,
    search,
)

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    """What a retraining run decided; ``version`` is set only when a challenger was registered."""

    parent_run_id: str
    registered: bool
    version: str | None
    challenger_accuracy: float | None
    champion_accuracy: float | None
    champion_version: str | None
    margin: float
    rows_base: int
    rows_recent_train: int
    rows_recent_holdout: int
    decision: str
    base_accuracy: float | None = None
    champion_base_accuracy: float | None = None
    base_tolerance: float | None = None
    min_score: float | None = None
    rows_base_holdout: int = 0
    task: str = "classification"
    # Regression: RMSE on the recent and the base hold-out, R^2 on the base hold-out.
    challenger_rmse: float | None = None
    champion_rmse: float | None = None
    base_rmse: float | None = None
    champion_base_rmse: float | None = None
    base_r2: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def include_base(base_data: str, trigger: dict[str, Any]) -> bool:
    """Whether a retraining for ``trigger`` trains on the base dataset (see `retrain`)."""
    if base_data in ("always", "never"):
        return base_data == "always"
    if base_data != "auto":
        raise ValueError(f"base_data must be auto, always or never, got {base_data!r}")
    detectors = (trigger.get("numbers") or {}).get("detectors") or []
    # The label detectors (accuracy, or error for a regressor) firing means the concept moved.
    return "accuracy" not in detectors and "error" not in detectors


@dataclass
class _Data:
    """The splits of one retraining: the base dataset's (as `training.train` made them) and
    the recent labelled rows', and the training frame built from them."""

    b_train: pd.DataFrame
    b_hold: pd.DataFrame
    yb_hold: pd.Series
    r_train: pd.DataFrame
    r_hold: pd.DataFrame
    y_train: pd.Series
    y_hold: pd.Series
    X_fit: pd.DataFrame
    y_fit: pd.Series


def _split_data(
    cfg: TrainingConfig,
    base: tuple[pd.DataFrame, pd.Series],
    recent_X: np.ndarray,
    recent_y: np.ndarray,
    holdout_fraction: float,
    recent_weight: int,
    include_base_data: bool,
    *,
    regression: bool,
) -> _Data:
    """The same split as training.train for the base data (the champion trained on b_train
    never saw b_hold either); the recent rows split into train and hold-out (stratified for a
    classifier when every class has two rows), recent rows repeated ``recent_weight`` times."""
    base_X, base_y = base
    b_train, b_hold, yb_train, yb_hold = holdout_split(cfg, base_X, base_y)
    r_train, r_hold, y_train, y_hold = split_recent(
        cfg, recent_X, recent_y, list(base_X.columns), holdout_fraction, regression=regression
    )
    parts_X, parts_y = [r_train] * recent_weight, [y_train] * recent_weight
    if include_base_data:
        parts_X.insert(0, b_train)
        parts_y.insert(0, yb_train)
    return _Data(
        b_train,
        b_hold,
        yb_hold,
        r_train,
        r_hold,
        y_train,
        y_hold,
        pd.concat(parts_X, ignore_index=True),
        pd.concat(parts_y, ignore_index=True),
    )


def split_recent(
    cfg: TrainingConfig,
    recent_X: np.ndarray,
    recent_y: np.ndarray,
    columns: list[str],
    holdout_fraction: float,
    *,
    regression: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """The recent labelled rows as ``r_train, r_hold, y_train, y_hold`` (stratified for a
    classifier when every class has two rows)."""
    recent = pd.DataFrame(np.asarray(recent_X, dtype=np.float64), columns=columns)
    labels = pd.Series(
        np.asarray(recent_y, dtype=np.float64) if regression else np.asarray(recent_y),
        name="target",
    )
    stratify = None if regression or labels.value_counts().min() < 2 else labels
    return train_test_split(
        recent, labels, test_size=holdout_fraction, random_state=cfg.seed, stratify=stratify
    )


def _run_tags(trigger: dict[str, Any], champion: str | None) -> dict[str, str]:
    """Tags of a retraining's parent run: why it ran, the numbers, the champion it faced."""
    return {
        "mlops.kind": "retraining",
        "mlops.trigger": str(trigger.get("reason", ""))[:4000],
        "mlops.drift": json.dumps(trigger.get("numbers", {}), default=str)[:4900],
        "mlops.champion_version": champion or "",
    }


def retrain(
    cfg: TrainingConfig,
    tracking_uri: str,
    recent_X: np.ndarray,
    recent_y: np.ndarray,
    *,
    trigger: dict[str, Any],
    margin: float,
    holdout_fraction: float = 0.3,
    recent_weight: int = 3,
    base_data: str = "auto",
    base_tolerance: float = 0.02,
    base_min_score: float | None = None,
    rmse_margin: float = 0.05,
    base_rmse_tolerance: float = 0.1,
    base_min_r2: float | None = None,
    entry_point: str | None = None,
    entry_point_space: dict[str, list[Any]] | None = None,
) -> RetrainResult:
    """Search on base + recent data, compare with the champion on recent held-out rows and on
    the base hold-out, and register the winner only if it is better by ``margin`` on the
    recent rows, reaches ``base_min_score`` (None: ``cfg.min_score``) on the base hold-out and
    is at most ``base_tolerance`` below the champion there (see the module docstring). No alias
    is set.

    ``recent_weight`` repeats the recent training rows so that they outweigh the base data.
    ``base_data`` decides whether the base dataset is trained on at all: "auto" leaves it out
    when the accuracy detector is among the trigger's detectors, because then the relation
    between features and label changed and the base labels contradict the new one (a model
    fit on both learns the old concept wherever the feedback does not cover the space).
    A regression base dataset goes the same way with the error metric (`_Policy`:
    ``rmse_margin``, ``base_rmse_tolerance``, ``base_min_r2``; ``margin``, ``base_tolerance``
    and ``base_min_score`` are the classification gate's).
    A champion our training did not register (`training.recipe.is_ours`) goes to
    `retrain_with_entry_point` when ``entry_point`` is set; without one it is refused (the
    DriftMonitor does not start a retraining then: "not configured").
    """
    champion_tags = _champion_tags(tracking_uri, cfg.model_name)
    if champion_tags is not None and not is_ours(champion_tags):
        if not entry_point:
            raise ValueError(
                f"{cfg.model_name}@champion was not registered by our training and "
                "retraining.entry_point is not set: retraining not configured"
            )
        return retrain_with_entry_point(
            cfg,
            tracking_uri,
            recent_X,
            recent_y,
            trigger=trigger,
            entry_point=entry_point,
            space=entry_point_space or {},
            margin=margin,
            rmse_margin=rmse_margin,
            holdout_fraction=holdout_fraction,
        )
    base_X, base_y = load_dataset(cfg.dataset, cfg.target)
    task = resolve_task(cfg.task, base_y)
    regression = task == REGRESSION
    policy = _Policy.for_task(
        cfg,
        task,
        margin=rmse_margin if regression else margin,
        base_tolerance=base_rmse_tolerance if regression else base_tolerance,
        floor=base_min_r2 if regression else base_min_score,
    )
    include_base_data = include_base(base_data, trigger)
    registry.use_tracking_uri(tracking_uri)
    client = registry.get_client(tracking_uri)
    exp_id = registry.ensure_experiment(client, cfg.experiment_name, tracking_uri)
    # The same split as training.train: the champion trained on b_train never saw b_hold either.
    d = _split_data(
        cfg,
        (base_X, base_y.astype("float64") if regression else base_y),
        recent_X,
        recent_y,
        holdout_fraction,
        recent_weight,
        include_base_data,
        regression=regression,
    )
    champion = registry.alias_version(client, cfg.model_name, registry.CHAMPION)
    tags = _run_tags(trigger, champion)
    metric = policy.metric
    with mlflow.start_run(
        experiment_id=exp_id, run_name=f"retrain-{cfg.model_name}", tags=tags
    ) as parent:
        pid = parent.info.run_id
        mlflow.log_params(
            {
                "task": task,
                "rows_base": len(d.b_train) if include_base_data else 0,
                "rows_base_holdout": len(d.b_hold),
                "rows_recent_train": len(d.r_train),
                "rows_recent_holdout": len(d.r_hold),
                "recent_weight": recent_weight,
                "base_data": f"{base_data}: {'included' if include_base_data else 'left out'}",
                **policy.params(),
            }
        )
        best, cv_score, _ = search(
            cfg, d.X_fit, d.y_fit, tracking_uri=tracking_uri, parent_run_id=pid, task=task
        )
        model, info = fit_and_log(
            best,
            d.X_fit,
            d.y_fit,
            reference_size=cfg.reference_sample_size,
            seed=cfg.seed,
            dataset_name=f"{cfg.dataset}+feedback",
            # After drift the recent rows are the reference the new model should be judged on.
            reference=(d.r_train, d.y_train),
            task=task,
        )
        new_recent = evaluate(model, d.r_hold, d.y_hold, task)
        new_base = evaluate(model, d.b_hold, d.yb_hold, task)
        champ_recent = champ_base = None
        if champion is not None:
            champ_model = registry.load_model(tracking_uri, cfg.model_name, champion)
            champ_recent = evaluate(champ_model, d.r_hold, d.y_hold, task)[metric]
            champ_base = evaluate(champ_model, d.b_hold, d.yb_hold, task)[metric]
        mlflow.log_metrics(
            {
                f"cv_{metric}": cv_score,
                **{f"recent_holdout_{k}": v for k, v in new_recent.items()},
                **{f"base_holdout_{k}": v for k, v in new_base.items()},
                **(
                    {f"champion_recent_holdout_{metric}": champ_recent}
                    if champ_recent is not None
                    else {}
                ),
                **(
                    {f"champion_base_holdout_{metric}": champ_base}
                    if champ_base is not None
                    else {}
                ),
            }
        )
        refusals = policy.refusals(new_recent[metric], champ_recent, new_base, champ_base)
        scores = policy.describe(new_recent[metric], champion, champ_recent, new_base, champ_base)
        version = None
        if not refusals:
            classes = [] if regression else [_plain(c) for c in model.classes_]
            version = register(
                client,
                cfg,
                info,
                feature_names=list(d.b_train.columns),
                classes=classes,
                # The tags the drift monitor reads are the recent hold-out's scores.
                metrics=new_recent,
                family=best["family"],
                extra_tags={
                    f"cv_{metric}": f"{cv_score:.6f}",
                    "mlops.trigger": tags["mlops.trigger"],
                    f"recent_holdout_{metric}": f"{new_recent[metric]:.6f}",
                    f"base_holdout_{metric}": f"{new_base[metric]:.6f}",
                },
                task=task,
            )
        decision = _record_decision(version, refusals, scores)
    result = RetrainResult(
        parent_run_id=pid,
        registered=version is not None,
        version=version,
        challenger_accuracy=None,
        champion_accuracy=None,
        champion_version=champion,
        margin=policy.margin,
        rows_base=len(d.b_train) if include_base_data else 0,
        rows_recent_train=len(d.r_train),
        rows_recent_holdout=len(d.r_hold),
        decision=decision,
        base_tolerance=policy.base_tolerance,
        min_score=policy.floor,
        rows_base_holdout=len(d.b_hold),
        task=task,
    )
    if regression:
        result.challenger_rmse, result.champion_rmse = new_recent["rmse"], champ_recent
        result.base_rmse, result.champion_base_rmse = new_base["rmse"], champ_base
        result.base_r2 = new_base["r2"]
    else:
        result.challenger_accuracy, result.champion_accuracy = new_recent["accuracy"], champ_recent
        result.base_accuracy, result.champion_base_accuracy = new_base["accuracy"], champ_base
    return result


@dataclass(frozen=True)
class _Policy:
    """A task's registration gate: its metric, the margin on the recent hold-out, and the base
    hold-out's tolerance and floor (classification: accuracy, ``margin`` absolute,
    ``base_tolerance`` below the champion, ``min_score``; regression: RMSE, ``rmse_margin``
    relative, ``base_rmse_tolerance`` relative, ``min_r2`` on R^2)."""

    task: str
    margin: float
    base_tolerance: float
    floor: float

    @classmethod
    def for_task(
        cls,
        cfg: TrainingConfig,
        task: str,
        *,
        margin: float,
        base_tolerance: float,
        floor: float | None,
    ) -> _Policy:
        """``floor`` None: the training config's own (``min_r2`` or ``min_score``)."""
        if floor is None:
            floor = cfg.min_r2 if task == REGRESSION else cfg.min_score
        return cls(task, margin, base_tolerance, floor)

    @property
    def metric(self) -> str:
        return "rmse" if self.task == REGRESSION else "accuracy"

    def params(self) -> dict[str, float]:
        if self.task == REGRESSION:
            return {
                "rmse_margin": self.margin,
                "base_rmse_tolerance": self.base_tolerance,
                "min_r2": self.floor,
            }
        return {
            "margin": self.margin,
            "base_tolerance": self.base_tolerance,
            "min_score": self.floor,
        }

    def refusals(
        self,
        recent: float,
        champion_recent: float | None,
        base: dict[str, float] | None,
        champion_base: float | None,
    ) -> list[str]:
        """`gate` or `regression_gate`; ``base`` (the winner's base hold-out scores) None
        when there is no base dataset."""
        if self.task == REGRESSION:
            return regression_gate(
                recent,
                champion_recent,
                base["rmse"] if base else None,
                base["r2"] if base else None,
                champion_base,
                rmse_margin=self.margin,
                min_r2=self.floor,
                base_rmse_tolerance=self.base_tolerance,
            )
        return gate(
            recent,
            champion_recent,
            base["accuracy"] if base else None,
            champion_base,
            margin=self.margin,
            min_score=self.floor,
            base_tolerance=self.base_tolerance,
        )

    def describe(
        self,
        recent: float,
        champion: str | None,
        champion_recent: float | None,
        base: dict[str, float],
        champion_base: float | None,
    ) -> str:
        """The numbers behind a decision, for its ``mlops.decision`` tag."""
        if self.task == REGRESSION:
            return (
                f"recent hold-out RMSE {recent:.4g} vs champion v{champion} "
                f"{_fmt(champion_recent)} (margin {self.margin:.0%}); base hold-out RMSE "
                f"{base['rmse']:.4g} vs champion {_fmt(champion_base)}, R^2 {base['r2']:.4f} "
                f"(min_r2 {self.floor}, tolerance {self.base_tolerance:.0%})"
            )
        return (
            f"recent hold-out accuracy {recent:.4f} vs champion v{champion} "
            f"{_fmt(champion_recent)} (margin {self.margin}); base hold-out accuracy "
            f"{base['accuracy']:.4f} vs champion {_fmt(champion_base)} (min_score {self.floor}, "
            f"tolerance {self.base_tolerance})"
        )


def _record_decision(version: str | None, refusals: list[str], scores: str) -> str:
    """A retraining's decision, as the parent run's ``mlops.decision`` tag and the log."""
    if version is not None:
        decision = f"registered v{version} for a canary rollout: {scores}"
    else:
        decision = f"not registered: {'; '.join(refusals)} ({scores})"
    mlflow.set_tag("mlops.decision", decision)
    log.info(decision)
    return decision


def gate(
    recent: float,
    champion_recent: float | None,
    base: float | None,
    champion_base: float | None,
    *,
    margin: float,
    min_score: float,
    base_tolerance: float,
) -> list[str]:
    """Why a retrained winner must not be registered (empty: it may be).

    ``recent`` / ``base``: its accuracy on the recent and the base hold-out; the champion's
    are None when there is no champion (then only the ``min_score`` floor applies). ``base``
    None (a user's entry point: no base dataset) leaves only the recent comparison."""
    out = []
    if champion_recent is not None and recent < champion_recent + margin:
        out.append(
            f"recent hold-out accuracy {recent:.4f} does not beat the champion's "
            f"{champion_recent:.4f} by {margin}"
        )
    if base is None:
        return out
    if base < min_score:
        out.append(f"base hold-out accuracy {base:.4f} is below min_score {min_score}")
    if champion_base is not None and base < champion_base - base_tolerance:
        out.append(
            f"base hold-out accuracy {base:.4f} is more than {base_tolerance} below the "
            f"champion's {champion_base:.4f}"
        )
    return out


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"


def regression_gate(
    recent_rmse: float,
    champion_recent_rmse: float | None,
    base_rmse: float | None,
    base_r2: float | None,
    champion_base_rmse: float | None,
    *,
    rmse_margin: float,
    min_r2: float,
    base_rmse_tolerance: float,
) -> list[str]:
    """Why a retrained regressor must not be registered (empty: it may be).

    It must cut the champion's RMSE on the recent hold-out by ``rmse_margin`` (relative),
    reach ``min_r2`` on the base hold-out and keep its RMSE there within
    ``(1 + base_rmse_tolerance)`` of the champion's. The champion's numbers are None when
    there is no champion (then only the ``min_r2`` floor applies); ``base_rmse`` None (no
    base dataset: a user's entry point) leaves only the recent comparison."""
    out = []
    if champion_recent_rmse is not None and recent_rmse > champion_recent_rmse * (1 - rmse_margin):
        out.append(
            f"recent hold-out RMSE {recent_rmse:.4g} does not beat the champion's "
            f"{champion_recent_rmse:.4g} by {rmse_margin:.0%}"
        )
    if base_rmse is None or base_r2 is None:
        return out
    if base_r2 < min_r2:
        out.append(f"base hold-out R^2 {base_r2:.4f} is below min_r2 {min_r2}")
    if champion_base_rmse is not None and base_rmse > champion_base_rmse * (
        1 + base_rmse_tolerance
    ):
        out.append(
            f"base hold-out RMSE {base_rmse:.4g} is more than {base_rmse_tolerance:.0%} above "
            f"the champion's {champion_base_rmse:.4g}"
        )
    return out


def _champion_tags(tracking_uri: str, model_name: str) -> dict[str, str] | None:
    """The champion's version tags; None when there is no champion."""
    client = registry.get_client(tracking_uri)
    champion = registry.alias_version(client, model_name, registry.CHAMPION)
    if champion is None:
        return None
    return dict(client.get_model_version(model_name, champion).tags or {})


def retrain_with_entry_point(
    cfg: TrainingConfig,
    tracking_uri: str,
    recent_X: np.ndarray,
    recent_y: np.ndarray,
    *,
    trigger: dict[str, Any],
    entry_point: str,
    space: dict[str, list[Any]],
    margin: float,
    rmse_margin: float,
    holdout_fraction: float,
) -> RetrainResult:
    """`retrain` for a champion we did not train: the user's ``entry_point`` is searched over
    ``space`` by Tune on the recent labelled rows (`training.recipe.entry_point_search`: the
    frame is the champion's feature columns plus ``target``), the best config refit on all
    of them, and the result gated like ours on the recent hold-out (``margin`` accuracy, or
    ``rmse_margin`` relative RMSE; no base dataset exists for such a model). A winner is
    logged with a signature and registered under the app's model name (tag ``family``
    ``entry_point:<spec>``, not ours, so its next retraining takes the entry point again);
    the RolloutController starts its canary."""
    registry.use_tracking_uri(tracking_uri)
    client = registry.get_client(tracking_uri)
    exp_id = registry.ensure_experiment(client, cfg.experiment_name, tracking_uri)
    champion = registry.alias_version(client, cfg.model_name, registry.CHAMPION)
    info = registry.version_info(client, cfg.model_name, champion)
    task = info.task if info.task == REGRESSION else "classification"
    regression = task == REGRESSION
    width = np.asarray(recent_X).shape[1]
    columns = list(info.feature_names) or [f"x{i}" for i in range(width)]
    r_train, r_hold, y_train, y_hold = split_recent(
        cfg, recent_X, recent_y, columns, holdout_fraction, regression=regression
    )
    frame = r_train.assign(target=y_train.to_numpy()).reset_index(drop=True)
    tags = _run_tags(trigger, champion) | {"mlops.entry_point": entry_point}
    with mlflow.start_run(
        experiment_id=exp_id, run_name=f"retrain-{cfg.model_name}", tags=tags
    ) as parent:
        pid = parent.info.run_id
        mlflow.log_params(
            {
                "recipe": f"entry_point {entry_point}",
                "rows_recent_train": len(r_train),
                "rows_recent_holdout": len(r_hold),
                "margin": rmse_margin if regression else margin,
            }
        )
        best, val_score, _ = entry_point_search(
            cfg, entry_point, space, frame, task, tracking_uri=tracking_uri, parent_run_id=pid
        )
        model = load_entry_point(entry_point)(frame, dict(best))
        new = score(task, y_hold.to_numpy(), predict_values(model, r_hold))
        champ_model = mlflow.pyfunc.load_model(registry.model_uri(cfg.model_name, champion))
        champ = score(task, y_hold.to_numpy(), predict_values(champ_model, r_hold))
        metric = "rmse" if regression else "accuracy"
        mlflow.log_metrics(
            {
                f"validation_{metric}": val_score,
                f"recent_holdout_{metric}": new,
                f"champion_recent_holdout_{metric}": champ,
            }
        )
        # No base dataset for such a model: only the recent hold-out's comparison applies.
        policy = _Policy.for_task(
            cfg, task, margin=rmse_margin if regression else margin, base_tolerance=0.0, floor=None
        )
        refusals = policy.refusals(new, champ, None, None)
        scores = (
            f"entry point {entry_point} {best}: recent hold-out {metric} {new:.4g} vs "
            f"champion v{champion} {champ:.4g} (margin {policy.margin})"
        )
        version = None
        if not refusals:
            logged = log_fitted(model, r_hold)
            classes = [] if regression else sorted({_plain(c) for c in y_train}, key=str)
            version = register(
                client,
                cfg,
                logged,
                feature_names=columns,
                classes=classes,
                metrics=_metrics(task, y_hold.to_numpy(), predict_values(model, r_hold)),
                family=f"entry_point:{entry_point}",
                extra_tags={"mlops.trigger": tags["mlops.trigger"], "mlops.recipe": "entry_point"},
                task=task,
            )
        decision = _record_decision(version, refusals, scores)
    return RetrainResult(
        parent_run_id=pid,
        registered=version is not None,
        version=version,
        challenger_accuracy=None if regression else new,
        champion_accuracy=None if regression else champ,
        champion_version=champion,
        margin=rmse_margin if regression else margin,
        rows_base=0,
        rows_recent_train=len(r_train),
        rows_recent_holdout=len(r_hold),
        decision=decision,
        task=task,
        challenger_rmse=new if regression else None,
        champion_rmse=champ if regression else None,
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _metrics(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The hold-out scores `metric_tags` records (the drift monitor's baselines)."""
    if task == REGRESSION:
        return regression_scores(np.asarray(y, float), np.asarray(pred, float))
    return {"accuracy": score(task, y, pred)}
