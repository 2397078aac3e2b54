"""Typed config: YAML defaults, env overrides, unknown keys refused."""

import pytest
from pydantic import ValidationError

from configs import default_tracking_uri, load_training_config, local_artifact_root
from configs.settings import TrainingConfig, load_section


def test_shipped_yaml_is_valid():
    cfg = load_training_config()
    assert cfg.min_score > 0 and len(cfg.families) >= 2


def test_env_override_is_parsed_as_yaml(monkeypatch):
    monkeypatch.setenv("MLOPS_TRAINING__NUM_SAMPLES", "3")
    monkeypatch.setenv("MLOPS_TRAINING__FAMILIES", "[random_forest]")
    cfg = load_training_config()
    assert cfg.num_samples == 3 and cfg.families == ["random_forest"]


def test_unknown_env_field_is_refused(monkeypatch):
    monkeypatch.setenv("MLOPS_TRAINING__NUM_SAMPELS", "3")
    with pytest.raises(ValueError, match="no field 'num_sampels'"):
        load_training_config()


def test_unknown_yaml_key_is_refused(tmp_path):
    path = tmp_path / "training.yaml"
    path.write_text("num_samples: 2\nnot_a_field: 1\n")
    with pytest.raises(ValidationError):
        load_section("training", TrainingConfig, path)


def test_default_tracking_uri_is_sqlite_under_project(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = default_tracking_uri()
    assert uri.startswith("sqlite:///") and uri.endswith(".mlflow/mlflow.db")
    assert local_artifact_root(uri).endswith(".mlflow/artifacts")
    assert local_artifact_root("http://mlflow:5000") is None


def test_retraining_entry_point_must_name_module_and_function():
    from configs.settings import RetrainingConfig, load_retraining_config

    shipped = load_retraining_config()
    assert shipped.entry_point is None and shipped.entry_point_space == {}
    ok = RetrainingConfig(entry_point="tests.recipes:fit_ridge", entry_point_space={"a": [1, 2]})
    assert ok.entry_point == "tests.recipes:fit_ridge"
    for bad in ("tests.recipes", "tests.recipes:", ":fit", "tests/recipes.py:fit", "a:b:c"):
        with pytest.raises(ValidationError, match="module:function"):
            RetrainingConfig(entry_point=bad)
    with pytest.raises(ValidationError, match="at least one value"):
        RetrainingConfig(entry_point="m:f", entry_point_space={"alpha": []})


def test_drift_reference_sizes_have_defaults_and_floors():
    from configs.settings import DriftConfig, load_drift_config

    cfg = load_drift_config()
    assert cfg.min_reference_rows == 100 and cfg.live_reference_rows == 500
    with pytest.raises(ValidationError):
        DriftConfig(live_reference_rows=5)
