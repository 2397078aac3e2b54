"""Datasets for training: a scikit-learn bundled set (no download) or a user's CSV / Parquet.

`detect_task` decides, for ``task: auto``, whether a target is a class label or a number to
regress: a float target with many distinct values is a quantity (diabetes progression, a
price), anything else (integers, strings, booleans, a few float codes) a class.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets as skdatasets

BUNDLED = {
    "breast_cancer": skdatasets.load_breast_cancer,
    "wine": skdatasets.load_wine,
    "iris": skdatasets.load_iris,
    "diabetes": skdatasets.load_diabetes,  # a regression target (disease progression)
}

# ``task: auto`` calls a float target with more distinct values than this a regression target.
REGRESSION_MIN_DISTINCT = 20
TASKS = ("classification", "regression")
# Column of a regressor's reference sample (next to registry.LABEL_COLUMN) holding the
# model's prediction for the row: the reference of the drift monitor's KS test on predictions.
PREDICTION_COLUMN = "__prediction__"


def detect_task(y: pd.Series) -> str:
    """ "regression" for a float target with more than `REGRESSION_MIN_DISTINCT` distinct
    values, else "classification"."""
    if pd.api.types.is_float_dtype(y.dtype) and y.nunique() > REGRESSION_MIN_DISTINCT:
        return "regression"
    return "classification"


def resolve_task(task: str, y: pd.Series) -> str:
    """The task to train for: ``task`` itself, or `detect_task` for "auto". A regression
    target must be numbers: anything else is a clear error, not a failed search."""
    if task == "auto":
        return detect_task(y)
    if task not in TASKS:
        raise ValueError(f"task must be classification, regression or auto, got {task!r}")
    if task == "regression" and not (
        pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype)
    ):
        raise ValueError(f"task regression needs a numeric target, this one is {y.dtype}")
    if task == "regression" and not np.isfinite(y.to_numpy(dtype=float)).all():
        raise ValueError("task regression needs a finite target: drop rows with NaN or inf")
    return task


def snake_case(name: str) -> str:
    """'mean radius' -> 'mean_radius', 'sepal length (cm)' -> 'sepal_length_cm'."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def load_dataset(dataset: str, target: str | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Return features (float columns, snake_case names) and labels.

    ``dataset`` is the name of a scikit-learn bundled dataset or a path to a CSV or Parquet file
    with a ``target`` column; every other column must be numeric.
    """
    if dataset in BUNDLED:
        bunch = BUNDLED[dataset]()
        X = pd.DataFrame(bunch.data, columns=[snake_case(c) for c in bunch.feature_names])
        y = pd.Series(bunch.target, name="target")
        return X.astype("float64"), y

    path = Path(dataset)
    if not path.exists():
        raise ValueError(
            f"dataset {dataset!r} is neither a bundled dataset ({', '.join(BUNDLED)}) "
            "nor an existing CSV/Parquet file"
        )
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix.lower() == ".csv":
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"{path}: expected a .csv or .parquet file")
    if not target:
        raise ValueError(f"{path}: pass --target, the name of the label column")
    if target not in frame.columns:
        raise ValueError(f"{path}: no column {target!r}; columns are {list(frame.columns)}")
    y = frame.pop(target)
    non_numeric = [c for c in frame.columns if not np.issubdtype(frame[c].dtype, np.number)]
    if non_numeric:
        raise ValueError(f"{path}: feature columns must be numeric, these are not: {non_numeric}")
    frame.columns = [snake_case(str(c)) for c in frame.columns]
    return frame.astype("float64"), y.rename("target")
