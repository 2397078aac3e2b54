"""Typed configuration for training, serving, rollout and drift policies."""

from configs.settings import (
    PROJECT_ROOT,
    DriftConfig,
    RetrainingConfig,
    RolloutConfig,
    TrainingConfig,
    default_tracking_uri,
    load_drift_config,
    load_retraining_config,
    load_rollout_config,
    load_section,
    load_training_config,
    local_artifact_root,
)

__all__ = [
    "PROJECT_ROOT",
    "DriftConfig",
    "RetrainingConfig",
    "RolloutConfig",
    "TrainingConfig",
    "default_tracking_uri",
    "load_drift_config",
    "load_section",
    "load_retraining_config",
    "load_rollout_config",
    "load_training_config",
    "local_artifact_root",
]
