"""Regression in training and retraining without Ray: task detection, the regressor families
and their allow-lists, the cross-validated RMSE, the registration floor and the retraining
gate."""

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from configs import DriftConfig, TrainingConfig
from training.__main__ import main
from training.data import detect_task, load_dataset, resolve_task
from training.retrain import include_base, regression_gate
from training.search import (
    FAMILY_TASK,
    allowed_estimators,
    build_estimator,
    check_families,
    cv_score,
    trusted_types,
)
from training.train import metric_tags, passes_floor


def test_auto_detects_a_float_target_with_many_values_as_regression():
    assert detect_task(load_dataset("diabetes")[1]) == "regression"
    for name in ("breast_cancer", "wine", "iris"):
        assert detect_task(load_dataset(name)[1]) == "classification"
    assert detect_task(pd.Series([0.0, 1.0] * 50)) == "classification"  # float class codes
    assert detect_task(pd.Series(np.arange(100))) == "classification"  # integers: classes
    assert detect_task(pd.Series(np.linspace(0, 1, 100))) == "regression"


def test_resolve_task_refuses_a_non_numeric_regression_target():
    assert resolve_task("regression", pd.Series([1, 2, 3])) == "regression"
    assert resolve_task("auto", load_dataset("diabetes")[1]) == "regression"
    with pytest.raises(ValueError, match="needs a numeric target"):
        resolve_task("regression", pd.Series(["a", "b"]))
    with pytest.raises(ValueError, match="finite target"):
        resolve_task("regression", pd.Series([1.0, np.nan]))
    with pytest.raises(ValueError, match="classification, regression or auto"):
        resolve_task("ranking", pd.Series([1.0]))


def test_regressor_families_are_in_the_safe_loading_allow_lists():
    estimators = allowed_estimators()
    assert "sklearn.linear_model._ridge.Ridge" in estimators
    assert "sklearn.ensemble._forest.RandomForestRegressor" in estimators
    assert "sklearn.ensemble._gb.GradientBoostingRegressor" in estimators
    assert trusted_types(["random_forest_regressor"]) == ["sklearn.tree._tree.Tree"]
    assert trusted_types(["ridge"]) == []
    assert allowed_estimators(["ridge"]) == sorted(
        [
            "sklearn.pipeline.Pipeline",
            "sklearn.preprocessing._data.StandardScaler",
            "sklearn.linear_model._ridge.Ridge",
        ]
    )


def test_a_family_of_the_other_task_is_refused():
    check_families(["ridge", "random_forest_regressor"], "regression")
    with pytest.raises(ValueError, match=r"\['random_forest'\] are not regression families"):
        check_families(["ridge", "random_forest"], "regression")
    with pytest.raises(ValueError, match="not classification families"):
        check_families(["ridge"], "classification")
    assert {t for t in FAMILY_TASK.values()} == {"classification", "regression"}


def test_cv_score_of_a_regressor_is_the_cross_validated_rmse_and_mae():
    X, y = load_dataset("diabetes")
    config = {"family": "ridge", "ridge_alpha": 3.0, "seed": 7}
    got = cv_score(config, X.to_numpy(), y.to_numpy(), folds=3)
    rmse, mae = [], []
    for tr, te in KFold(3, shuffle=True, random_state=7).split(X):
        model = Pipeline([("scale", StandardScaler()), ("model", Ridge(alpha=3.0))])
        pred = model.fit(X.iloc[tr], y.iloc[tr]).predict(X.iloc[te])
        rmse.append(np.sqrt(mean_squared_error(y.iloc[te], pred)))
        mae.append(mean_absolute_error(y.iloc[te], pred))
    assert got["cv_rmse"] == pytest.approx(np.mean(rmse))
    assert got["cv_mae"] == pytest.approx(np.mean(mae))
    assert isinstance(build_estimator(config).fit(X, y)[-1], Ridge)


def test_registration_floor_and_tags_follow_the_task():
    cfg = TrainingConfig(min_r2=0.4)
    assert passes_floor(cfg, "regression", {"r2": 0.45, "rmse": 50, "mae": 40})[0] is True
    ok, why = passes_floor(cfg, "regression", {"r2": 0.2, "rmse": 50, "mae": 40})
    assert not ok and why == "held-out R^2 0.2000 < min_r2 0.4"
    ok, why = passes_floor(cfg, "classification", {"accuracy": 0.8, "f1_macro": 0.8})
    assert not ok and why == "held-out accuracy 0.8000 < min_score 0.85"
    assert metric_tags("regression", {"rmse": 1.5, "mae": 1.0, "r2": 0.5}) == {
        "test_rmse": "1.500000",
        "test_mae": "1.000000",
        "test_r2": "0.500000",
    }
    assert metric_tags("classification", {"accuracy": 0.9}) == {"test_accuracy": "0.900000"}
    assert cfg.families_for("regression") == ["ridge", "random_forest_regressor"]
    assert cfg.families_for("classification") == ["logistic_regression", "random_forest"]
    with pytest.raises(ValidationError):
        TrainingConfig(regression_families=["logistic_regression"])
    with pytest.raises(ValidationError):
        TrainingConfig(task="ranking")


GATE = {"rmse_margin": 0.05, "min_r2": 0.3, "base_rmse_tolerance": 0.1}


def test_regression_gate_registers_a_winner_that_cuts_the_rmse():
    assert regression_gate(90.0, 100.0, 55.0, 0.45, 54.0, **GATE) == []
    assert regression_gate(90.0, None, 55.0, 0.45, None, **GATE) == []  # no champion


def test_regression_gate_checks_each_condition_on_its_own():
    assert regression_gate(96.0, 100.0, 55.0, 0.45, 54.0, **GATE) == [
        "recent hold-out RMSE 96 does not beat the champion's 100 by 5%"
    ]
    assert regression_gate(90.0, 100.0, 55.0, 0.25, 54.0, **GATE) == [
        "base hold-out R^2 0.2500 is below min_r2 0.3"
    ]
    assert regression_gate(90.0, 100.0, 60.0, 0.45, 54.0, **GATE) == [
        "base hold-out RMSE 60 is more than 10% above the champion's 54"
    ]
    assert (
        regression_gate(90.0, 100.0, 60.0, 0.45, 54.0, **{**GATE, "base_rmse_tolerance": 0.2}) == []
    )


def test_an_error_drift_leaves_the_base_data_out_like_an_accuracy_drop():
    trigger = {"numbers": {"detectors": ["error"]}}
    assert include_base("auto", trigger) is False
    assert include_base("auto", {"numbers": {"detectors": ["prediction_ks"]}}) is True


def test_drift_config_keeps_rearm_above_the_regression_alphas():
    with pytest.raises(ValidationError, match="error_alpha"):
        DriftConfig(error_alpha=0.2, rearm_alpha=0.1)
    assert "error" in DriftConfig().trigger_on and "prediction_ks" in DriftConfig().trigger_on


def test_cli_refuses_a_regression_target_that_is_not_numbers(tmp_path, capsys):
    path = tmp_path / "data.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": ["a", "b", "c"]}).to_csv(path, index=False)
    code = main(["--data", str(path), "--target", "label", "--task", "regression"])
    assert code == 2
    assert "task regression needs a numeric target" in capsys.readouterr().err
