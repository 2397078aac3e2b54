"""The Ray Tune search: model families, their search space, and the trainable.

A family belongs to one task (`FAMILY_TASK`): classifiers are scored by cross-validated
accuracy (Tune maximises it), regressors by cross-validated RMSE (Tune minimises it; MAE is
logged beside it). Every family is listed in the tables below, so the allow-lists safe loading
builds from them (`trusted_types`, `allowed_estimators`) cover the regressors too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

# Hyperparameters per family, as (Tune sampler, low, high): `search_space` makes the Tune
# objects, so that importing this module (the model servers do, through training.safe_load,
# for the estimator allow-list) does not import Ray Tune: about 3 s of a replica's first model
# load here. The flat space keeps Tune's random search simple; each family reads only its own
# keys, and `family_params` strips the others before they are logged.
SPACE: dict[str, dict[str, tuple[str, float, float]]] = {
    "logistic_regression": {"lr_C": ("loguniform", 1e-3, 1e2)},
    "random_forest": {
        "rf_n_estimators": ("randint", 20, 150),
        "rf_max_depth": ("randint", 2, 12),
        "rf_min_samples_leaf": ("randint", 1, 8),
    },
    "gradient_boosting": {
        "gb_n_estimators": ("randint", 20, 150),
        "gb_learning_rate": ("loguniform", 1e-2, 0.5),
        "gb_max_depth": ("randint", 1, 5),
    },
    "ridge": {"ridge_alpha": ("loguniform", 1e-3, 1e2)},
    "random_forest_regressor": {
        "rfr_n_estimators": ("randint", 20, 150),
        "rfr_max_depth": ("randint", 2, 12),
        "rfr_min_samples_leaf": ("randint", 1, 8),
    },
    "gradient_boosting_regressor": {
        "gbr_n_estimators": ("randint", 20, 150),
        "gbr_learning_rate": ("loguniform", 1e-2, 0.5),
        "gbr_max_depth": ("randint", 1, 5),
    },
}

CLASSIFICATION = "classification"
REGRESSION = "regression"
FAMILY_TASK: dict[str, str] = {
    "logistic_regression": CLASSIFICATION,
    "random_forest": CLASSIFICATION,
    "gradient_boosting": CLASSIFICATION,
    "ridge": REGRESSION,
    "random_forest_regressor": REGRESSION,
    "gradient_boosting_regressor": REGRESSION,
}
# What Tune optimises per task: (metric reported by `trainable`, mode).
TUNE_METRIC: dict[str, tuple[str, str]] = {
    CLASSIFICATION: ("cv_accuracy", "max"),
    REGRESSION: ("cv_rmse", "min"),
}


def check_families(families: list[str], task: str) -> None:
    """Refuse a family of the other task: a regressor cannot be scored by accuracy."""
    wrong = [f for f in families if FAMILY_TASK.get(f) != task]
    if wrong:
        ok = sorted(f for f, t in FAMILY_TASK.items() if t == task)
        raise ValueError(f"families {wrong} are not {task} families; expected some of {ok}")


def search_space(families: list[str], seed: int) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {"family": tune.choice(list(families)), "seed": seed}
    for fam in families:
        space.update(
            {key: getattr(tune, kind)(lo, hi) for key, (kind, lo, hi) in SPACE[fam].items()}
        )
    return space


# MLflow saves scikit-learn models with skops, which loads only types it trusts. Tree ensembles
# carry sklearn's Tree node storage, which skops does not trust by default because a crafted
# file can index out of bounds. Every model here is one we fit ourselves, so exactly that type
# is trusted, per family; nothing else an unknown file might hold.
SKOPS_TRUSTED_TYPES: dict[str, list[str]] = {
    "logistic_regression": [],
    "random_forest": ["sklearn.tree._tree.Tree"],
    "gradient_boosting": ["sklearn.tree._tree.Tree"],
    "ridge": [],
    "random_forest_regressor": ["sklearn.tree._tree.Tree"],
    "gradient_boosting_regressor": ["sklearn.tree._tree.Tree"],
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
    "ridge": [qualified_name(StandardScaler), qualified_name(Ridge)],
    "random_forest_regressor": [qualified_name(RandomForestRegressor)],
    "gradient_boosting_regressor": [qualified_name(GradientBoostingRegressor)],
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
    return build_regressor(config, fam, seed)


def build_regressor(config: dict[str, Any], fam: str, seed: int) -> Pipeline:
    """The regressor pipelines of `build_estimator`."""
    if fam == "ridge":
        est = Ridge(alpha=float(config["ridge_alpha"]))
        return Pipeline([("scale", StandardScaler()), ("model", est)])
    if fam == "random_forest_regressor":
        est = RandomForestRegressor(
            n_estimators=int(config["rfr_n_estimators"]),
            max_depth=int(config["rfr_max_depth"]),
            min_samples_leaf=int(config["rfr_min_samples_leaf"]),
            random_state=seed,
            n_jobs=1,
        )
        return Pipeline([("model", est)])
    if fam == "gradient_boosting_regressor":
        est = GradientBoostingRegressor(
            n_estimators=int(config["gbr_n_estimators"]),
            learning_rate=float(config["gbr_learning_rate"]),
            max_depth=int(config["gbr_max_depth"]),
            random_state=seed,
        )
        return Pipeline([("model", est)])
    raise ValueError(f"unknown model family {fam!r}; expected one of {sorted(SPACE)}")


def cv_score(config: dict[str, Any], X: np.ndarray, y: np.ndarray, folds: int) -> dict[str, float]:
    """Cross-validated score of one config: accuracy for a classifier family, RMSE and MAE
    (plain, positive numbers) for a regressor family."""
    seed = int(config.get("seed", 0))
    if FAMILY_TASK[config["family"]] == REGRESSION:
        cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
        res = cross_validate(
            build_estimator(config),
            X,
            y,
            cv=cv,
            scoring=("neg_root_mean_squared_error", "neg_mean_absolute_error"),
        )
        rmse = -res["test_neg_root_mean_squared_error"]
        mae = -res["test_neg_mean_absolute_error"]
        return {
            "cv_rmse": float(rmse.mean()),
            "cv_rmse_std": float(rmse.std()),
            "cv_mae": float(mae.mean()),
        }
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(build_estimator(config), X, y, cv=cv, scoring="accuracy")
    return {"cv_accuracy": float(scores.mean()), "cv_accuracy_std": float(scores.std())}


def trainable(config: dict[str, Any], X: np.ndarray, y: np.ndarray, folds: int) -> None:
    """Ray Tune function trainable: one cross-validated score per trial."""
    from ray import tune

    tune.report(cv_score(config, X, y, folds))
