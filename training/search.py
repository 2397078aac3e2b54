"""The Ray Tune search: model families, their search space, and the trainable."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import tune
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

# Hyperparameters per family. The flat space keeps Tune's random search simple; each family
# reads only its own keys, and `family_params` strips the others before they are logged.
SPACE: dict[str, dict[str, Any]] = {
    "logistic_regression": {"lr_C": tune.loguniform(1e-3, 1e2)},
    "random_forest": {
        "rf_n_estimators": tune.randint(20, 150),
        "rf_max_depth": tune.randint(2, 12),
        "rf_min_samples_leaf": tune.randint(1, 8),
    },
    "gradient_boosting": {
        "gb_n_estimators": tune.randint(20, 150),
        "gb_learning_rate": tune.loguniform(1e-2, 0.5),
        "gb_max_depth": tune.randint(1, 5),
    },
}


def search_space(families: list[str], seed: int) -> dict[str, Any]:
    space: dict[str, Any] = {"family": tune.choice(list(families)), "seed": seed}
    for fam in families:
        space.update(SPACE[fam])
    return space


# MLflow saves scikit-learn models with skops, which loads only types it trusts. Tree ensembles
# carry sklearn's Tree node storage, which skops does not trust by default because a crafted
# file can index out of bounds. Every model here is one we fit ourselves, so exactly that type
# is trusted, per family; nothing else an unknown file might hold.
SKOPS_TRUSTED_TYPES: dict[str, list[str]] = {
    "logistic_regression": [],
    "random_forest": ["sklearn.tree._tree.Tree"],
    "gradient_boosting": ["sklearn.tree._tree.Tree"],
}


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class, the form skops and the allow-lists use."""
    return f"{cls.__module__}.{cls.__qualname__}"


# The estimator classes a model of each family is built from (`build_estimator`'s pipeline
# steps). Loading refuses any other class (training/safe_load.py): skops trusts every
# scikit-learn estimator by default, the deployment only the ones it trains.
FAMILY_ESTIMATORS: dict[str, list[str]] = {
    "logistic_regression": [qualified_name(StandardScaler), qualified_name(LogisticRegression)],
    "random_forest": [qualified_name(RandomForestClassifier)],
    "gradient_boosting": [qualified_name(GradientBoostingClassifier)],
}
PIPELINE = qualified_name(Pipeline)


def trusted_types(families: list[str] | None = None) -> list[str]:
    """Types beyond skops' defaults that models of ``families`` (all when None) need."""
    fams = list(SPACE) if families is None else families
    return sorted({t for fam in fams for t in SKOPS_TRUSTED_TYPES[fam]})


def allowed_estimators(families: list[str] | None = None) -> list[str]:
    """Estimator classes models of ``families`` (all when None) are made of, Pipeline too."""
    fams = list(SPACE) if families is None else families
    return sorted({PIPELINE, *(c for fam in fams for c in FAMILY_ESTIMATORS[fam])})


def family_params(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``config`` that the chosen family uses (plus the family itself)."""
    fam = config["family"]
    keys = set(SPACE[fam])
    return {"family": fam, **{k: config[k] for k in sorted(keys) if k in config}}


def build_estimator(config: dict[str, Any]) -> Pipeline:
    """A scikit-learn pipeline for one point of the search space."""
    fam = config["family"]
    seed = int(config.get("seed", 0))
    if fam == "logistic_regression":
        est = LogisticRegression(C=float(config["lr_C"]), max_iter=2000)
        return Pipeline([("scale", StandardScaler()), ("model", est)])
    if fam == "random_forest":
        est = RandomForestClassifier(
            n_estimators=int(config["rf_n_estimators"]),
            max_depth=int(config["rf_max_depth"]),
            min_samples_leaf=int(config["rf_min_samples_leaf"]),
            random_state=seed,
            n_jobs=1,
        )
        return Pipeline([("model", est)])
    if fam == "gradient_boosting":
        est = GradientBoostingClassifier(
            n_estimators=int(config["gb_n_estimators"]),
            learning_rate=float(config["gb_learning_rate"]),
            max_depth=int(config["gb_max_depth"]),
            random_state=seed,
        )
        return Pipeline([("model", est)])
    raise ValueError(f"unknown model family {fam!r}; expected one of {sorted(SPACE)}")


def cv_score(config: dict[str, Any], X: np.ndarray, y: np.ndarray, folds: int) -> dict[str, float]:
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(config.get("seed", 0)))
    scores = cross_val_score(build_estimator(config), X, y, cv=cv, scoring="accuracy")
    return {"cv_accuracy": float(scores.mean()), "cv_accuracy_std": float(scores.std())}


def trainable(config: dict[str, Any], X: np.ndarray, y: np.ndarray, folds: int) -> None:
    """Ray Tune function trainable: one cross-validated score per trial."""
    tune.report(cv_score(config, X, y, folds))
