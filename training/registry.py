"""MLflow registry access shared by training, the rollout controller and the drift monitor.

Versions are addressed by alias (``champion``, ``challenger``) or number, never by turning an
artifact URI into a local path. Facts the serving side needs on every version (feature names,
classes, held-out accuracy) are written as version tags at registration, so one registry call
describes a version.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from configs import local_artifact_root

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
REFERENCE_ARTIFACT = "reference/reference_sample.csv"
LABEL_COLUMN = "__label__"


def get_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def use_tracking_uri(tracking_uri: str) -> None:
    """Point this process's fluent MLflow API (runs, ``models:/`` URIs) at ``tracking_uri``."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_root = local_artifact_root(tracking_uri)
    location = f"{artifact_root}/{name}" if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another process created it between our lookup and create.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@dataclass
class VersionInfo:
    """What the serving side knows about one registered version."""

    name: str
    version: str
    run_id: str | None
    feature_names: list[str]
    classes: list[Any]
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "feature_names": self.feature_names,
            "classes": self.classes,
            "aliases": self.aliases,
            "tags": self.tags,
            "metrics": self.metrics,
            "params": self.params,
        }


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version number an alias points at, or None when the alias (or model) is absent."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def version_info(client: MlflowClient, model_name: str, version: str) -> VersionInfo:
    mv = client.get_model_version(model_name, str(version))
    tags = dict(mv.tags or {})
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            metrics, params = dict(run.data.metrics), dict(run.data.params)
        except MlflowException as exc:
            log.warning("run %s of %s v%s unreadable: %s", mv.run_id, model_name, version, exc)
    return VersionInfo(
        name=model_name,
        version=str(mv.version),
        run_id=mv.run_id,
        feature_names=json.loads(tags.get("feature_names", "[]")),
        classes=json.loads(tags.get("classes", "[]")),
        aliases=list(mv.aliases or []),
        tags=tags,
        metrics=metrics,
        params=params,
    )


def model_uri(model_name: str, version: str) -> str:
    return f"models:/{model_name}/{version}"


def load_model(tracking_uri: str, model_name: str, version: str):
    """Load a registered version as a scikit-learn estimator (needs predict_proba)."""
    use_tracking_uri(tracking_uri)
    return mlflow.sklearn.load_model(model_uri(model_name, version))


def set_alias(client: MlflowClient, model_name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(model_name, alias, str(version))


def delete_alias(client: MlflowClient, model_name: str, alias: str) -> None:
    with contextlib.suppress(MlflowException):
        client.delete_registered_model_alias(model_name, alias)


def model_tags(client: MlflowClient, model_name: str) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(model_name).tags or {})
    except MlflowException:
        return {}
