"""MLflow registry access shared by training, the rollout controller and the drift monitor.

Versions are addressed by alias (``champion``, ``challenger``) or number, never by turning an
artifact URI into a local path. Facts the serving side needs on every version (feature names,
classes, held-out accuracy) are written as version tags at registration, so one registry call
describes a version.
"""

from __future__ import annotations

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

# Answers by which the registry says "no such thing": anything else (connection refused, a
# timeout, a 5xx, a locked SQLite file) means we do not know, and must not be read as absent.
_ABSENT_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
# The registry answered and refused the request itself (a bad argument): a real error to report,
# not an outage.
_REFUSED_CODES = frozenset(
    {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST", "RESOURCE_ALREADY_EXISTS"}
)


class RegistryUnavailable(RuntimeError):
    """The registry could not be asked (unreachable, timed out, failing): not the same as an
    answer that something is absent. Callers keep what they last knew and retry."""


def _is_absent(exc: BaseException) -> bool:
    if not isinstance(exc, MlflowException):
        return False
    if exc.error_code in _ABSENT_CODES:
        return True
    # A missing alias on an existing model comes back as INVALID_PARAMETER_VALUE "... not found".
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc).lower()


def _unavailable(what: str, exc: BaseException) -> RegistryUnavailable:
    err = RegistryUnavailable(f"MLflow registry unavailable ({what}): {exc!r}"[:1000])
    err.__cause__ = exc
    return err


def _call(what: str, fn, *args, **kwargs):
    """Run one registry call; an outage becomes `RegistryUnavailable`, while the registry's
    own answers (absent, refused) stay `MlflowException`s."""
    try:
        return fn(*args, **kwargs)
    except MlflowException as exc:
        if _is_absent(exc) or exc.error_code in _REFUSED_CODES:
            raise
        raise _unavailable(what, exc) from exc
    except Exception as exc:  # requests/urllib3 errors, sqlalchemy OperationalError, OSError
        raise _unavailable(what, exc) from exc


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
    """The version number an alias points at, or None when the alias (or model) is absent.

    Raises `RegistryUnavailable` when the registry cannot be asked: "unknown" is not "absent".
    """
    try:
        mv = _call(f"alias {alias!r}", client.get_model_version_by_alias, model_name, alias)
    except MlflowException as exc:
        if _is_absent(exc):
            return None
        raise _unavailable(f"alias {alias!r}", exc) from exc
    return str(mv.version)


def version_info(client: MlflowClient, model_name: str, version: str) -> VersionInfo:
    """Describe one version. A version that does not exist raises `MlflowException`
    (RESOURCE_DOES_NOT_EXIST); an outage raises `RegistryUnavailable`."""
    mv = _call(f"version {version}", client.get_model_version, model_name, str(version))
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
    """Load a registered version as a scikit-learn estimator (needs predict_proba), only in a
    format and of types this deployment allows (`training.safe_load`; a refusal raises
    `training.safe_load.ModelRefused`, a ValueError naming what was found and what is allowed).
    """
    from training.safe_load import load_model_uri

    use_tracking_uri(tracking_uri)
    return load_model_uri(model_uri(model_name, version))


def set_alias(client: MlflowClient, model_name: str, alias: str, version: str) -> None:
    """Point ``alias`` at ``version``; `RegistryUnavailable` when the registry cannot be asked."""
    _call(
        f"set alias {alias!r}", client.set_registered_model_alias, model_name, alias, str(version)
    )


def delete_alias(client: MlflowClient, model_name: str, alias: str) -> None:
    """Remove ``alias`` (already absent is fine); `RegistryUnavailable` on an outage, so a
    caller never believes an alias is gone when the delete never reached the registry."""
    try:
        _call(f"delete alias {alias!r}", client.delete_registered_model_alias, model_name, alias)
    except MlflowException as exc:
        if not _is_absent(exc):
            raise


def set_model_tag(client: MlflowClient, model_name: str, key: str, value: str) -> None:
    """Set a registered-model tag; `RegistryUnavailable` on an outage."""
    _call(f"set tag {key!r}", client.set_registered_model_tag, model_name, key, value)


def set_version_tag(client: MlflowClient, model_name: str, version: str, key: str, value: str):
    """Set a model-version tag; `RegistryUnavailable` on an outage."""
    _call(
        f"set tag {key!r} on v{version}",
        client.set_model_version_tag,
        model_name,
        str(version),
        key,
        value,
    )


def model_tags(client: MlflowClient, model_name: str) -> dict[str, str]:
    """The registered model's tags; {} when the model is absent, `RegistryUnavailable` when the
    registry cannot be asked."""
    try:
        return dict(_call("model tags", client.get_registered_model, model_name).tags or {})
    except MlflowException as exc:
        if _is_absent(exc):
            return {}
        raise _unavailable("model tags", exc) from exc
