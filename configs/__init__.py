"""Typed configuration for training, serving, rollout and drift policies."""

from configs.settings import (
    PROJECT_ROOT,
    TrainingConfig,
    default_tracking_uri,
    load_section,
    load_training_config,
    local_artifact_root,
)

__all__ = [
    "PROJECT_ROOT",
    "TrainingConfig",
    "default_tracking_uri",
    "load_section",
    "load_training_config",
    "local_artifact_root",
]
