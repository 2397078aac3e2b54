"""Typed configuration: YAML files in this folder, validated by pydantic, overridable by env.

Nothing here runs at import. Call a loader when the value is needed.

Env overrides: ``MLOPS_<SECTION>__<FIELD>`` (for example ``MLOPS_TRAINING__NUM_SAMPLES=4``);
the value is parsed as YAML, so numbers, booleans and lists work. ``MLOPS_CONFIG_DIR`` points
at another folder of YAML files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(__file__).resolve().parent

ModelFamily = Literal["logistic_regression", "random_forest", "gradient_boosting"]
RegressionFamily = Literal["ridge", "random_forest_regressor", "gradient_boosting_regressor"]


# A retraining entry point: dotted module path, a colon, a function name.
ENTRY_POINT_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingConfig(StrictModel):
    """How `python -m training` searches, evaluates and registers a model."""

    experiment_name: str = "raymlops"
    model_name: str = "breast_cancer_classifier"
    dataset: str = Field(
        "breast_cancer",
        description="scikit-learn bundled dataset (breast_cancer, wine, iris; diabetes for "
        "regression) or CSV/Parquet path",
    )
    target: str | None = Field(None, description="Target column when `dataset` is a file")
    task: Literal["classification", "regression", "auto"] = Field(
        "auto",
        description="auto: regression for a float target with many distinct values "
        "(training.data.detect_task), else classification",
    )
    test_size: float = Field(0.2, gt=0, lt=1)
    cv_folds: int = Field(3, ge=2)
    num_samples: int = Field(8, ge=1, description="Ray Tune trials")
    max_concurrent_trials: int = Field(2, ge=1)
    trial_cpus: float = Field(1.0, gt=0)
    families: list[ModelFamily] = ["logistic_regression", "random_forest"]
    regression_families: list[RegressionFamily] = Field(
        ["ridge", "random_forest_regressor"], description="families searched for regression"
    )
    seed: int = 42
    min_score: float = Field(0.85, ge=0, le=1, description="Held-out accuracy a champion needs")
    min_r2: float = Field(
        0.3,
        le=1,
        description="held-out R^2 a regressor needs to become champion (relative to the "
        "target's variance, so one number fits any target scale)",
    )
    reference_sample_size: int = Field(500, ge=10)

    @model_validator(mode="after")
    def _families_not_empty(self) -> TrainingConfig:
        if not self.families:
            raise ValueError("families must name at least one model family")
        if not self.regression_families:
            raise ValueError("regression_families must name at least one model family")
        return self

    def families_for(self, task: str) -> list[str]:
        """The families searched for ``task`` (classification or regression)."""
        return list(self.regression_families if task == "regression" else self.families)


class RolloutConfig(StrictModel):
    """The canary policy: steps, how much evidence each needs, and what counts as worse."""

    steps: list[float] = Field([10, 25, 50, 100], description="challenger traffic %, in order")
    min_requests: int = Field(200, ge=1, description="challenger requests per step")
    min_step_seconds: float = Field(30.0, ge=0)
    max_step_seconds: float = Field(
        900.0, gt=0, description="after this without enough data the step holds as inconclusive"
    )
    analysis_interval_s: float = Field(2.0, gt=0)
    error_rate_margin: float = Field(0.01, ge=0)
    latency_p99_factor: float = Field(2.0, ge=1)
    latency_p99_floor_ms: float = Field(50.0, ge=0)
    min_labelled: int = Field(
        50, ge=1, description="labels per version for the accuracy (or absolute-error) test"
    )
    accuracy_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="one-sided alpha of the label test: two-proportion z-test on accuracy for "
        "classifiers, Welch's t-test on absolute errors for regressors",
    )
    shadow_fraction: float = Field(
        0.0, ge=0, le=1, description="share of champion requests mirrored to an idle challenger"
    )

    @model_validator(mode="after")
    def _steps_increase_to_100(self) -> RolloutConfig:
        if not self.steps or any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("steps must be percentages in (0, 100]")
        if sorted(self.steps) != self.steps or self.steps[-1] != 100:
            raise ValueError(f"steps must increase and end at 100, got {self.steps}")
        return self


class RetrainingConfig(StrictModel):
    """What a drift-triggered retraining trains on and what it must beat."""

    min_labelled_rows: int = Field(100, ge=10, description="feedback rows needed to retrain")
    holdout_fraction: float = Field(
        0.3, gt=0, lt=1, description="recent labelled rows kept aside to compare with champion"
    )
    margin: float = Field(0.02, ge=0, description="accuracy the winner must add over champion")
    recent_weight: int = Field(3, ge=1, description="times recent rows repeat in training data")
    base_data: Literal["auto", "always", "never"] = Field(
        "auto",
        description="train on the base dataset too: auto = unless the accuracy detector fired "
        "(the concept changed, so the base labels are stale)",
    )
    task_cpus: float = Field(0.0, ge=0, description="CPUs of the task driving Tune")
    max_wait_s: float = Field(
        600,
        ge=0,
        description="after an accuracy drop (or a regressor's error rise), how long a "
        "retraining waits for "
        "min_labelled_rows labels that arrived after the drop",
    )
    base_tolerance: float = Field(
        0.02,
        ge=0,
        le=1,
        description="how much lower than the champion's a winner's accuracy on the base "
        "dataset's hold-out may be (labels cannot change that hold-out; it also needs the "
        "training config's min_score)",
    )
    base_min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="accuracy a winner needs on the base hold-out; None: the training "
        "config's min_score",
    )
    rmse_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="regression: the winner's RMSE on the recent hold-out must be at most "
        "(1 - rmse_margin) x the champion's",
    )
    base_rmse_tolerance: float = Field(
        0.1,
        ge=0,
        description="regression: the winner's RMSE on the base hold-out may be at most "
        "(1 + base_rmse_tolerance) x the champion's (and its R^2 must reach base_min_r2)",
    )
    base_min_r2: float | None = Field(
        None,
        le=1,
        description="regression: R^2 a winner needs on the base hold-out; None: the training "
        "config's min_r2",
    )
    entry_point: str | None = Field(
        None,
        description="retraining recipe for a champion our training did not register: "
        "'module:function', called as fn(train_frame, trial_config) -> fitted model "
        "(train_frame: feature columns + 'target'); None: such a champion is not retrained",
    )
    entry_point_space: dict[str, list[Any]] = Field(
        {},
        description="the entry point's Tune space: param -> values (tune.choice each); "
        "num_samples trials come from the training config",
    )

    @field_validator("entry_point")
    @classmethod
    def _entry_point_shape(cls, value: str | None) -> str | None:
        if value is not None and not ENTRY_POINT_RE.fullmatch(value):
            raise ValueError(f"entry_point must look like 'package.module:function', got {value!r}")
        return value

    @field_validator("entry_point_space")
    @classmethod
    def _space_values(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, values in value.items() if not values]
        if empty:
            raise ValueError(f"entry_point_space params need at least one value: {empty}")
        return value


DriftDetector = Literal["ks", "psi", "chi2", "accuracy", "prediction_ks", "error"]


class DriftConfig(StrictModel):
    """What the DriftMonitor keeps in memory, how its detectors decide, and when it retrains."""

    window_size: int = Field(2000, ge=10, description="recent rows (features, predictions)")
    label_window_size: int = Field(2000, ge=10, description="recent labelled rows per version")
    max_versions: int = Field(4, ge=2, description="versions with windows; oldest dropped")
    min_samples: int = Field(200, ge=10, description="rows before KS, PSI, chi-square run")
    min_labelled: int = Field(100, ge=10, description="labels before the accuracy test runs")
    min_new_samples: int = Field(
        100, ge=1, description="new rows an evaluation needs to count for hysteresis"
    )
    min_new_labels: int = Field(
        25, ge=1, description="new labels an evaluation needs to count for hysteresis"
    )
    ks_alpha: float = Field(0.01, gt=0, lt=1, description="family-wise, before Bonferroni")
    psi_threshold: float = Field(0.25, gt=0)
    psi_rearm_threshold: float = Field(0.1, ge=0, description="PSI detector re-arms below")
    psi_bins: int = Field(10, ge=2)
    chi2_alpha: float = Field(0.01, gt=0, lt=1)
    chi2_min_effect: float = Field(
        0.05, ge=0, le=1, description="total-variation distance the class shares must move"
    )
    chi2_method: Literal["homogeneity", "goodness_of_fit"] = "homogeneity"
    accuracy_tolerance: float = Field(0.05, ge=0, lt=1, description="allowed drop from baseline")
    accuracy_alpha: float = Field(0.01, gt=0, lt=1)
    prediction_ks_alpha: float = Field(
        0.01, gt=0, lt=1, description="regression: KS on predicted values vs the reference"
    )
    prediction_reference_rows: int = Field(
        500,
        ge=10,
        description="regression without logged reference predictions: the first this many "
        "live predictions become the reference",
    )
    error_tolerance: float = Field(
        0.2, ge=0, description="regression: allowed relative rise of live MSE over baseline"
    )
    error_alpha: float = Field(0.01, gt=0, lt=1)
    rearm_alpha: float = Field(
        0.1, gt=0, lt=1, description="a p-value detector re-arms when its p-value is above"
    )
    hysteresis_count: int = Field(3, ge=1, description="consecutive evaluations over threshold")
    cooldown_s: float = Field(1800.0, ge=0, description="between triggers, and after a failure")
    trigger_on: list[DriftDetector] = Field(
        ["ks", "psi", "chi2", "accuracy", "prediction_ks", "error"],
        description="detectors that may start a retraining",
    )
    request_map_rows: int = Field(
        100_000, ge=1, description="rows held for joining feedback to predictions"
    )
    request_map_ttl_s: float = Field(3600.0, gt=0, description="feedback later than this: unknown")
    feedback_grace_s: float = Field(
        30.0,
        ge=0,
        description="a label that arrives before its prediction record (records travel in "
        "batches) waits this long to be joined before it counts as unknown",
    )
    feedback_grace_items: int = Field(20_000, ge=0, description="labels waiting at most")
    feedback_grace_bytes: int = Field(
        8 * 1024 * 1024, ge=0, description="estimated bytes of the labels waiting, at most"
    )
    max_source_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="while a version's labelled window holds labels of two or more sources, "
        "one source keeps at most this share of label_window_size (its newer labels replace "
        "its own older ones instead of other sources' labels)",
    )
    max_labels_per_source: int | None = Field(
        None,
        ge=1,
        description="labelled rows one source may hold in a version's window, even when it "
        "is the only source (None: no limit beyond max_source_share)",
    )
    evaluate_interval_s: float = Field(30.0, gt=0)
    min_reference_rows: int = Field(
        100,
        ge=10,
        description="a model's logged input example becomes its drift reference only with at "
        "least this many rows (KS and PSI need a sample, not a handful of rows)",
    )
    live_reference_rows: int = Field(
        500,
        ge=10,
        description="with no logged reference, the first this many rows the champion serves "
        "become the reference (the analysis period is the rows after them)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DriftConfig:
        if self.min_samples > self.window_size:
            raise ValueError(f"min_samples {self.min_samples} > window_size {self.window_size}")
        if self.min_labelled > self.label_window_size:
            raise ValueError(
                f"min_labelled {self.min_labelled} > label_window_size {self.label_window_size}"
            )
        if self.psi_rearm_threshold >= self.psi_threshold:
            raise ValueError("psi_rearm_threshold must be below psi_threshold")
        alphas = (
            self.ks_alpha,
            self.chi2_alpha,
            self.accuracy_alpha,
            self.prediction_ks_alpha,
            self.error_alpha,
        )
        if self.rearm_alpha <= max(alphas):
            raise ValueError(
                "rearm_alpha must be above ks_alpha, chi2_alpha, accuracy_alpha, "
                "prediction_ks_alpha and error_alpha"
            )
        return self


SerializationFormat = Literal["skops", "pickle", "cloudpickle"]


class ModelLoadingConfig(StrictModel):
    """What a model artifact may contain for this deployment to load it (see
    `training.safe_load`). The artifact's own MLmodel file never widens these lists."""

    allowed_formats: list[SerializationFormat] = Field(
        ["skops"],
        description="serialization formats loaded; pickle and cloudpickle run arbitrary code "
        "from the artifact at load, so they are off unless listed here",
    )
    trusted_types: list[str] = Field(
        [],
        description="types skops may load beyond those the model families of "
        "training/search.py need (fully qualified names, as skops.io.get_untrusted_types "
        "reports them)",
    )
    allowed_estimators: list[str] = Field(
        [],
        description="estimator classes (fully qualified) accepted beyond the model families "
        "of training/search.py",
    )
    allowed_flavors: list[str] = Field(
        ["sklearn"],
        description="MLflow flavors loaded: sklearn (skops, allow-listed types: the fast path) "
        "by default; python_function, lightgbm, xgboost, ... load through MLflow's own loaders, "
        "which unpickle the artifact or import its code: list them only for a registry whose "
        "writers you trust to run code in the model servers",
    )

    @model_validator(mode="after")
    def _formats_not_empty(self) -> ModelLoadingConfig:
        if not self.allowed_formats:
            raise ValueError("allowed_formats must name at least one serialization format")
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


def load_rollout_config(path: str | Path | None = None) -> RolloutConfig:
    return load_section("rollout", RolloutConfig, path)


def load_retraining_config(path: str | Path | None = None) -> RetrainingConfig:
    return load_section("retraining", RetrainingConfig, path)


def load_drift_config(path: str | Path | None = None) -> DriftConfig:
    return load_section("drift", DriftConfig, path)


def load_model_loading_config(path: str | Path | None = None) -> ModelLoadingConfig:
    return load_section("model_loading", ModelLoadingConfig, path)


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
