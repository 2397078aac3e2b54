"""The benchmark's own models: trained, logged and registered the way `python -m training` does
it (`training.train.fit_and_log` and `register`: same pipeline builder, signature, reference
sample for the drift monitor, version tags), minus the Ray Tune search.

Two registered models, each with two versions (v1 champion, v2 the canary):

- ``cheap``: StandardScaler + LogisticRegression (microseconds per row);
- ``expensive``: RandomForestClassifier with 100 trees (a few ms per call, whatever the rows).

Also the raw model's throughput: predictions and probabilities in this process, one thread,
computed as a ModelServer replica and the baseline compute them (`LoadedModel.predict`: one
predict_proba pass for these families).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from configs import TrainingConfig
from training import registry
from training.data import load_dataset
from training.train import evaluate, fit_and_log, register

DATASET = "breast_cancer"
SEED = 42

# kind -> (pipeline config of v1, of v2), as `training.search.build_estimator` reads them
MODELS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cheap": (
        {"family": "logistic_regression", "lr_C": 1.0, "seed": SEED},
        {"family": "logistic_regression", "lr_C": 0.5, "seed": SEED},
    ),
    "expensive": (
        {
            "family": "random_forest",
            "rf_n_estimators": 100,
            "rf_max_depth": 10,
            "rf_min_samples_leaf": 1,
            "seed": SEED,
        },
        {
            "family": "random_forest",
            "rf_n_estimators": 100,
            "rf_max_depth": 10,
            "rf_min_samples_leaf": 2,
            "seed": SEED + 1,
        },
    ),
}


@dataclass
class RegisteredModel:
    kind: str  # cheap / expensive
    name: str  # registered model name
    family: str
    versions: list[str]  # [champion, canary]
    feature_names: list[str]
    test_accuracy: list[float]


def dataset() -> tuple[pd.DataFrame, pd.Series]:
    return load_dataset(DATASET)


def register_models(tracking_uri: str, prefix: str = "bench") -> dict[str, RegisteredModel]:
    """Fit, log and register both versions of both models; v1 of each gets alias champion."""
    import mlflow

    registry.use_tracking_uri(tracking_uri)
    client = registry.get_client(tracking_uri)
    exp_id = registry.ensure_experiment(client, "raymlops-bench", tracking_uri)
    X, y = dataset()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=SEED, stratify=y
    )
    out: dict[str, RegisteredModel] = {}
    for kind, configs in MODELS.items():
        name = f"{prefix}_{kind}"
        cfg = TrainingConfig(model_name=name, dataset=DATASET)
        versions, accs = [], []
        for config in configs:
            with mlflow.start_run(experiment_id=exp_id, run_name=f"bench-{kind}"):
                mlflow.log_params(config)
                model, info = fit_and_log(
                    config,
                    X_train,
                    y_train,
                    reference_size=cfg.reference_sample_size,
                    seed=SEED,
                    dataset_name=DATASET,
                )
                scores = evaluate(model, X_test, y_test)
                mlflow.log_metrics({"test_accuracy": scores["accuracy"]})
                classes = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
                version = register(
                    client,
                    cfg,
                    info,
                    feature_names=list(X.columns),
                    classes=classes,
                    metrics=scores,
                    family=config["family"],
                )
            versions.append(version)
            accs.append(scores["accuracy"])
        registry.set_alias(client, name, registry.CHAMPION, versions[0])
        out[kind] = RegisteredModel(
            kind=kind,
            name=name,
            family=configs[0]["family"],
            versions=versions,
            feature_names=list(X.columns),
            test_accuracy=accs,
        )
    return out


def existing_models(tracking_uri: str, prefix: str = "bench") -> dict[str, RegisteredModel] | None:
    """The models of an earlier `register_models` on this registry, or None if incomplete."""
    client = registry.get_client(tracking_uri)
    out = {}
    for kind, configs in MODELS.items():
        name = f"{prefix}_{kind}"
        champion = registry.alias_version(client, name, registry.CHAMPION)
        if champion is None:
            return None
        try:
            canary = str(int(champion) + 1)
            infos = [registry.version_info(client, name, v) for v in (champion, canary)]
        except Exception:
            return None
        out[kind] = RegisteredModel(
            kind=kind,
            name=name,
            family=configs[0]["family"],
            versions=[champion, canary],
            feature_names=infos[0].feature_names,
            test_accuracy=[float(i.tags.get("test_accuracy", "nan")) for i in infos],
        )
    return out


def raw_throughput(
    tracking_uri: str, name: str, version: str, batch_rows: int, seconds: float = 3.0
) -> dict[str, float]:
    """Calls/s and rows/s of predictions + probabilities on ``batch_rows`` rows, in this
    process, one thread, on the registered model loaded and called as a replica does."""
    from deployments.model_server import LoadedModel

    model = LoadedModel(version, registry.load_model(tracking_uri, name, version))
    X_all = dataset()[0].to_numpy()
    rng = np.random.default_rng(SEED)
    batches = [X_all[rng.integers(0, len(X_all), batch_rows)] for _ in range(16)]
    for b in batches[:3]:  # warm-up
        model.predict(b)
    calls, lat = 0, []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        b = batches[calls % len(batches)]
        t0 = time.perf_counter()
        model.predict(b)
        lat.append(time.perf_counter() - t0)
        calls += 1
    elapsed = time.perf_counter() - start
    return {
        "batch_rows": batch_rows,
        "calls_per_s": calls / elapsed,
        "rows_per_s": calls * batch_rows / elapsed,
        "p50_ms": float(np.percentile(lat, 50) * 1000),
    }
