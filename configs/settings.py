"""Typed configuration: YAML files in this folder, validated by pydantic, overridable by env.

Nothing here runs at import. Call a loader when the value is needed.

Env overrides: ``MLOPS_<SECTION>__<FIELD>`` (for example ``MLOPS_TRAINING__NUM_SAMPLES=4``);
the value is parsed as YAML, so numbers, booleans and lists work. ``MLOPS_CONFIG_DIR`` points
at another folder of YAML files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(__file__).resolve().parent

ModelFamily = Literal["logistic_regression", "random_forest", "gradient_boosting"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingConfig(StrictModel):
    """How `python -m training` searches, evaluates and registers a model."""

    experiment_name: str = "raymlops"
    model_name: str = "breast_cancer_classifier"
    dataset: str = Field(
        "breast_cancer",
        description="scikit-learn bundled dataset (breast_cancer, wine, iris) or CSV/Parquet path",
    )
    target: str | None = Field(None, description="Target column when `dataset` is a file")
    test_size: float = Field(0.2, gt=0, lt=1)
    cv_folds: int = Field(3, ge=2)
    num_samples: int = Field(8, ge=1, description="Ray Tune trials")
    max_concurrent_trials: int = Field(2, ge=1)
    trial_cpus: float = Field(1.0, gt=0)
    families: list[ModelFamily] = ["logistic_regression", "random_forest"]
    seed: int = 42
    min_score: float = Field(0.85, ge=0, le=1, description="Held-out accuracy a champion needs")
    reference_sample_size: int = Field(500, ge=10)

    @model_validator(mode="after")
    def _families_not_empty(self) -> TrainingConfig:
        if not self.families:
            raise ValueError("families must name at least one model family")
        return self


T = TypeVar("T", bound=BaseModel)


def _env_overrides(section: str, model: type[BaseModel]) -> dict:
    prefix = f"MLOPS_{section.upper()}__"
    out = {}
    for key, raw in os.environ.items():
        if not key.startswith(prefix):
            continue
        field = key[len(prefix) :].lower()
        if field not in model.model_fields:
            raise ValueError(
                f"{key}: {model.__name__} has no field {field!r}; "
                f"expected one of {sorted(model.model_fields)}"
            )
        out[field] = yaml.safe_load(raw)
    return out


def load_section(section: str, model: type[T], path: str | Path | None = None) -> T:
    """Read ``<config dir>/<section>.yaml`` (or ``path``), apply env overrides, validate."""
    if path is None:
        base = Path(os.environ.get("MLOPS_CONFIG_DIR", CONFIG_DIR))
        path = base / f"{section}.yaml"
    path = Path(path)
    data = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
    data.update(_env_overrides(section, model))
    return model.model_validate(data)


def load_training_config(path: str | Path | None = None) -> TrainingConfig:
    return load_section("training", TrainingConfig, path)


def default_tracking_uri() -> str:
    """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or a SQLite file under ``.mlflow/``.

    The default is anchored at the project root (not the cwd) so that the CLI, Ray workers
    and Serve replicas started from anywhere agree on one registry.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{PROJECT_ROOT / '.mlflow' / 'mlflow.db'}"


def local_artifact_root(tracking_uri: str) -> str | None:
    """For a SQLite tracking store, the artifact folder beside the DB file; else None
    (a tracking server chooses its own artifact store)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "artifacts").as_uri()
    return None
