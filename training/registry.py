"""MLflow registry access shared by training, the rollout controller and the drift monitor.

Versions are addressed by alias (``champion``, ``challenger``) or number, never by turning an
artifact URI into a local path. Facts the serving side needs on every version (feature names,
classes, held-out accuracy) are written as version tags at registration by our own training, so
one registry call describes a version. A model a team registered with its own code has none of
our tags: its MLmodel file (the signature: input columns and types, or a tensor spec; its
flavors) describes it instead. That file is read once per version (a version is immutable) and
only the file, never the artifact, so describing stays cheap.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Schema, TensorSpec

from configs import local_artifact_root

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
REFERENCE_ARTIFACT = "reference/reference_sample.csv"
LABEL_COLUMN = "__label__"

TASKS = ("classification", "regression", "other")
# Version tags naming the task: ours (written by `python -m training`), and the user's
# override, which wins.
TASK_TAG = "task"
TASK_OVERRIDE_TAG = "mlops.task"
# Flavors whose output is an estimator's predict(): one label or one number per row, so the
# signature's output type tells a classifier from a regressor. A custom pyfunc returns anything.
ESTIMATOR_FLAVORS = frozenset({"sklearn", "lightgbm", "xgboost", "catboost"})
_CLASS_TYPES = frozenset({"string", "long", "integer", "boolean", "binary"})
_NUMBER_TYPES = frozenset({"double", "float"})

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
    """What the serving side knows about one registered version.

    ``task``: "classification" | "regression" | "other" (see `infer_task`). ``input_schema`` /
    ``output_schema``: the signature's specs as plain dicts (`schema_dicts`), [] without one.
    ``feature_names``: the ``feature_names`` tag, else the signature's input columns (a 2-D
    tensor of k columns: ``x0`` .. ``x{k-1}``). ``flavors``: the MLmodel's flavor names."""

    name: str
    version: str
    run_id: str | None
    feature_names: list[str]
    classes: list[Any]
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    task: str = "classification"
    input_schema: list[dict[str, Any]] = field(default_factory=list)
    output_schema: list[dict[str, Any]] = field(default_factory=list)
    has_signature: bool = False
    flavors: list[str] = field(default_factory=list)

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
            "task": self.task,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "has_signature": self.has_signature,
            "flavors": self.flavors,
        }


@dataclass(frozen=True)
class ModelFacts:
    """What a version's MLmodel file says: its flavors and signature (as `schema_dicts`)."""

    flavors: tuple[str, ...] = ()
    has_signature: bool = False
    input_schema: tuple[dict[str, Any], ...] = ()
    output_schema: tuple[dict[str, Any], ...] = ()


def schema_dicts(schema: Schema | None) -> list[dict[str, Any]]:
    """A signature's inputs or outputs as JSON-able dicts: ``{"name", "type"}`` per column, or
    ``{"name", "type": "tensor", "dtype", "shape"}`` per tensor (-1: any size)."""
    if schema is None:
        return []
    out = []
    for spec in schema.inputs:
        if isinstance(spec, TensorSpec):
            out.append(
                {
                    "name": spec.name,
                    "type": "tensor",
                    "dtype": str(spec.type),
                    "shape": [int(d) for d in spec.shape],
                }
            )
        else:
            out.append({"name": spec.name, "type": str(spec.to_dict().get("type"))})
    return out


def schema_feature_names(input_schema: list[dict[str, Any]]) -> list[str]:
    """Input names a signature defines: its column names, or ``x0`` .. ``x{k-1}`` for one 2-D
    tensor of k columns; [] when it names none (no signature, or another tensor shape)."""
    if input_schema and all(s["type"] != "tensor" and s["name"] for s in input_schema):
        return [str(s["name"]) for s in input_schema]
    if len(input_schema) == 1 and input_schema[0]["type"] == "tensor":
        shape = input_schema[0]["shape"]
        if len(shape) == 2 and shape[1] > 0:
            return [f"x{j}" for j in range(shape[1])]
    return []


def _task_from_outputs(output_schema: list[dict[str, Any]]) -> str:
    if len(output_schema) != 1:
        return "other"
    spec = output_schema[0]
    if spec["type"] != "tensor":
        kind = spec["type"]
    else:
        shape = spec["shape"]
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            return "other"
        kind = {"f": "double", "i": "long", "u": "long", "b": "boolean", "U": "string"}.get(
            _dtype_kind(spec["dtype"]), "other"
        )
    if kind in _CLASS_TYPES:
        return "classification"
    if kind in _NUMBER_TYPES:
        return "regression"
    return "other"


def _dtype_kind(dtype: str) -> str:
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return "?"
    return "U" if kind in "OSU" else kind


def infer_task(tags: dict[str, str], flavors: list[str], output_schema: list[dict]) -> str:
    """The version's task: "classification", "regression" or "other".

    1. the ``mlops.task`` version tag (a user's override), else the ``task`` tag our training
       writes, when either names a task;
    2. a ``classes`` tag (our classifiers): classification;
    3. an estimator flavor (sklearn, lightgbm, xgboost, catboost), from the signature's single
       output: a string, long, integer or boolean column (or a 1-D / one-column tensor of
       such a dtype) is a class label -> classification; double or float -> regression;
       several outputs, a wider tensor or no signature -> "other";
    4. anything else (a custom pyfunc returns what it likes): "other".

    An integer-valued regressor (counts) reads as a classifier: set ``mlops.task``."""
    for key in (TASK_OVERRIDE_TAG, TASK_TAG):
        value = (tags.get(key) or "").strip().lower()
        if value in TASKS:
            return value
        if value:
            log.warning("version tag %s=%r is not one of %s: ignored", key, value, TASKS)
    if json.loads(tags.get("classes") or "[]"):
        return "classification"
    if ESTIMATOR_FLAVORS & set(flavors):
        return _task_from_outputs(output_schema)
    return "other"


_facts_cache: dict[tuple[str, str, str, str], ModelFacts] = {}
_facts_lock = threading.Lock()


def model_facts(client: MlflowClient, model_name: str, version: str, source: str) -> ModelFacts:
    """Flavors and signature of a version from its MLmodel file alone (not the artifact),
    cached per version (versions are immutable). An MLmodel that is absent or unreadable gives
    empty facts (the model servers refuse such a version when they load it); an outage raises
    `RegistryUnavailable`."""
    key = (str(client._registry_uri), model_name, str(version), str(source))
    with _facts_lock:
        cached = _facts_cache.get(key)
    if cached is not None:
        return cached
    root = _call(
        f"download URI of v{version}",
        client.get_model_version_download_uri,
        model_name,
        str(version),
    )
    facts = _read_facts(str(root).rstrip("/") + "/MLmodel", str(client.tracking_uri))
    with _facts_lock:
        _facts_cache[key] = facts
    return facts


def _read_facts(mlmodel_uri: str, tracking_uri: str) -> ModelFacts:
    with tempfile.TemporaryDirectory(prefix="raymlops-mlmodel-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=mlmodel_uri, dst_path=tmp, tracking_uri=tracking_uri
            )
        except MlflowException as exc:
            if not _is_absent(exc):
                raise _unavailable("MLmodel", exc) from exc
            log.warning("%s: no MLmodel file (%s)", mlmodel_uri, exc)
            return ModelFacts()
        except FileNotFoundError:
            return ModelFacts()
        except Exception as exc:
            raise _unavailable("MLmodel", exc) from exc
        try:
            mm = Model.load(local)
        except Exception as exc:  # a broken file is the artifact's fault, not an outage
            log.warning("%s: unreadable MLmodel file: %r", mlmodel_uri, exc)
            return ModelFacts()
    sig = mm.signature
    return ModelFacts(
        flavors=tuple(sorted(mm.flavors or {})),
        has_signature=sig is not None,
        input_schema=tuple(schema_dicts(sig.inputs if sig else None)),
        output_schema=tuple(schema_dicts(sig.outputs if sig else None)),
    )


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
    """Describe one version: its tags, its run's metrics and params, and its MLmodel's flavors
    and signature (`model_facts`, cached). A version that does not exist raises
    `MlflowException` (RESOURCE_DOES_NOT_EXIST); an outage raises `RegistryUnavailable`."""
    mv = _call(f"version {version}", client.get_model_version, model_name, str(version))
    tags = dict(mv.tags or {})
    facts = model_facts(client, model_name, str(mv.version), str(mv.source))
    inputs, outputs = list(facts.input_schema), list(facts.output_schema)
    feature_names = json.loads(tags.get("feature_names") or "[]") or schema_feature_names(inputs)
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
        feature_names=feature_names,
        classes=json.loads(tags.get("classes") or "[]"),
        aliases=list(mv.aliases or []),
        tags=tags,
        metrics=metrics,
        params=params,
        task=infer_task(tags, list(facts.flavors), outputs),
        input_schema=inputs,
        output_schema=outputs,
        has_signature=facts.has_signature,
        flavors=list(facts.flavors),
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
