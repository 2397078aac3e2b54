"""Datasets for training: a scikit-learn bundled set (no download) or a user's CSV / Parquet."""

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
}


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
