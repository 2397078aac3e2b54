"""Retraining entry points the tests configure (`retraining.entry_point`): what a team that
registered its own model would write, ``fn(train_frame, trial_config) -> fitted model``."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.linear_model import Ridge


def fit_ridge(frame: pd.DataFrame, config: dict[str, Any]) -> Ridge:
    """A Ridge regressor on every column but ``target``; ``alpha`` from the trial config."""
    X = frame.drop(columns=["target"])
    return Ridge(alpha=float(config.get("alpha", 1.0))).fit(X, frame["target"])
