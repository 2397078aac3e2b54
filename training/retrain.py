"""Retraining on drift: base data plus recent labelled feedback, the same Tune search, and a
registration gate against the champion on a held-out slice of the *recent* data.

`retrain` is plain Python (it needs Ray for Tune); the DriftMonitor runs it as one Ray task.
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
from training.data import load_dataset
from training.train import evaluate, fit_and_log, register, search

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    """What a retraining run decided; ``version`` is set only when a challenger was registered."""

    parent_run_id: str
    registered: bool
    version: str | None
    challenger_accuracy: float
    champion_accuracy: float | None
    champion_version: str | None
    margin: float
    rows_base: int
    rows_recent_train: int
    rows_recent_holdout: int
    decision: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def include_base(base_data: str, trigger: dict[str, Any]) -> bool:
    """Whether a retraining for ``trigger`` trains on the base dataset (see `retrain`)."""
    if base_data in ("always", "never"):
        return base_data == "always"
    if base_data != "auto":
        raise ValueError(f"base_data must be auto, always or never, got {base_data!r}")
    detectors = (trigger.get("numbers") or {}).get("detectors") or []
    return "accuracy" not in detectors


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
) -> RetrainResult:
    """Search on base + recent data, compare with the champion on recent held-out rows, and
    register the winner with alias ``challenger`` only if it is better by ``margin``.

    ``recent_weight`` repeats the recent training rows so that they outweigh the base data.
    ``base_data`` decides whether the base dataset is trained on at all: "auto" leaves it out
    when the accuracy detector is among the trigger's detectors, because then the relation
    between features and label changed and the base labels contradict the new one (a model
    fit on both learns the old concept wherever the feedback does not cover the space).
    """
    include_base_data = include_base(base_data, trigger)
    registry.use_tracking_uri(tracking_uri)
    client = registry.get_client(tracking_uri)
    exp_id = registry.ensure_experiment(client, cfg.experiment_name, tracking_uri)
    base_X, base_y = load_dataset(cfg.dataset, cfg.target)
    columns = list(base_X.columns)
    recent = pd.DataFrame(np.asarray(recent_X, dtype=np.float64), columns=columns)
    labels = pd.Series(np.asarray(recent_y), name="target")
    stratify = labels if labels.value_counts().min() >= 2 else None
    r_train, r_hold, y_train, y_hold = train_test_split(
        recent, labels, test_size=holdout_fraction, random_state=cfg.seed, stratify=stratify
    )
    parts_X = [r_train] * recent_weight
    parts_y = [y_train] * recent_weight
    if include_base_data:
        parts_X.insert(0, base_X)
        parts_y.insert(0, base_y)
    X_fit = pd.concat(parts_X, ignore_index=True)
    y_fit = pd.concat(parts_y, ignore_index=True)

    champion = registry.alias_version(client, cfg.model_name, registry.CHAMPION)
    tags = {
        "mlops.kind": "retraining",
        "mlops.trigger": str(trigger.get("reason", ""))[:4000],
        "mlops.drift": json.dumps(trigger.get("numbers", {}), default=str)[:4900],
        "mlops.champion_version": champion or "",
    }
    with mlflow.start_run(
        experiment_id=exp_id, run_name=f"retrain-{cfg.model_name}", tags=tags
    ) as parent:
        pid = parent.info.run_id
        mlflow.log_params(
            {
                "rows_base": len(base_X) if include_base_data else 0,
                "rows_recent_train": len(r_train),
                "rows_recent_holdout": len(r_hold),
                "recent_weight": recent_weight,
                "base_data": f"{base_data}: {'included' if include_base_data else 'left out'}",
                "margin": margin,
            }
        )
        best, cv_acc, _ = search(cfg, X_fit, y_fit, tracking_uri=tracking_uri, parent_run_id=pid)
        model, info = fit_and_log(
            best,
            X_fit,
            y_fit,
            reference_size=cfg.reference_sample_size,
            seed=cfg.seed,
            dataset_name=f"{cfg.dataset}+feedback",
            # After drift the recent rows are the reference the new model should be judged on.
            reference=(r_train, y_train),
        )
        new_scores = evaluate(model, r_hold, y_hold)
        champ_acc = None
        if champion is not None:
            champ_model = registry.load_model(tracking_uri, cfg.model_name, champion)
            champ_acc = evaluate(champ_model, r_hold, y_hold)["accuracy"]
        mlflow.log_metrics(
            {
                "cv_accuracy": cv_acc,
                "recent_holdout_accuracy": new_scores["accuracy"],
                **(
                    {"champion_recent_holdout_accuracy": champ_acc} if champ_acc is not None else {}
                ),
            }
        )
        better = champ_acc is None or new_scores["accuracy"] >= champ_acc + margin
        version = None
        if better:
            classes = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
            version = register(
                client,
                cfg,
                info,
                feature_names=columns,
                classes=classes,
                metrics=new_scores,
                family=best["family"],
                extra_tags={
                    "cv_accuracy": f"{cv_acc:.6f}",
                    "mlops.trigger": tags["mlops.trigger"],
                    "recent_holdout_accuracy": f"{new_scores['accuracy']:.6f}",
                },
            )
            registry.set_alias(client, cfg.model_name, registry.CHALLENGER, version)
            decision = (
                f"registered v{version} as challenger: recent hold-out accuracy "
                f"{new_scores['accuracy']:.4f} vs champion v{champion} {champ_acc}"
                f" (margin {margin})"
            )
        else:
            decision = (
                f"not registered: recent hold-out accuracy {new_scores['accuracy']:.4f} does not "
                f"beat champion v{champion} {champ_acc:.4f} by {margin}"
            )
        mlflow.set_tag("mlops.decision", decision)
        log.info(decision)
    return RetrainResult(
        parent_run_id=pid,
        registered=version is not None,
        version=version,
        challenger_accuracy=new_scores["accuracy"],
        champion_accuracy=champ_acc,
        champion_version=champion,
        margin=margin,
        rows_base=len(base_X) if include_base_data else 0,
        rows_recent_train=len(r_train),
        rows_recent_holdout=len(r_hold),
        decision=decision,
    )
