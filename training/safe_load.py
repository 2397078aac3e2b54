"""Load a registered scikit-learn model only if it holds what this deployment allows.

`mlflow.sklearn.load_model` takes the serialization format and the skops trusted types from
the artifact's own MLmodel file, and it loads pickle: whoever can write a model version to the
registry could run code in every model server that loads it. Here the allowed formats and the
trusted types come from the deployment (`configs.ModelLoadingConfig`, whose defaults are the
model families of `training.search`), never from the artifact:

1. the MLmodel file must have a ``sklearn`` flavor whose ``serialization_format`` is allowed
   (skops only by default; pickle and cloudpickle only when listed);
2. for skops, every type `skops.io.get_untrusted_types` finds in the file must be in our
   trusted list (refused naming the others), and the file is loaded with exactly that list;
3. the loaded object must be an allowed estimator (a Pipeline of the families' steps, or one
   of them), with ``predict_proba``.

A refusal raises `ModelRefused`, a `ValueError` whose message says what was found and what is
allowed: callers report it as a failed load of that version.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import yaml

from configs.settings import ModelLoadingConfig, load_model_loading_config
from training import search

FLAVOR = "sklearn"


class ModelRefused(ValueError):
    """The artifact holds a format, type or estimator this deployment does not load."""


def trusted_types(cfg: ModelLoadingConfig) -> list[str]:
    """Types skops may load beyond its defaults: the model families' own plus the config's."""
    return sorted(set(search.trusted_types()) | set(cfg.trusted_types))


def allowed_estimators(cfg: ModelLoadingConfig) -> list[str]:
    """Estimator classes a loaded model may consist of."""
    return sorted(set(search.allowed_estimators()) | set(cfg.allowed_estimators))


def load_model_uri(model_uri: str, cfg: ModelLoadingConfig | None = None) -> Any:
    """Download ``model_uri`` (``models:/name/3``; the tracking URI must be set) and load it
    with `load_local`. The download goes to a temporary folder removed afterwards."""
    cfg = cfg or load_model_loading_config()
    with tempfile.TemporaryDirectory(prefix="raymlops-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        try:
            return load_local(local, cfg)
        except ModelRefused as exc:
            raise ModelRefused(f"{model_uri}: {exc}") from None


def load_local(path: str | Path, cfg: ModelLoadingConfig | None = None) -> Any:
    """Load the MLflow sklearn model saved in folder ``path``; see the module docstring."""
    cfg = cfg or load_model_loading_config()
    root = Path(path).resolve()
    flavor = _flavor(root)
    fmt = flavor.get("serialization_format") or "pickle"  # MLflow's default before skops
    if fmt not in cfg.allowed_formats:
        raise ModelRefused(
            f"model is serialized as {fmt!r}, which can run arbitrary code when loaded; this "
            f"deployment loads only {list(cfg.allowed_formats)} (model_loading.allowed_formats)"
        )
    data = (root / str(flavor.get("pickled_model", ""))).resolve()
    if root not in data.parents or not data.is_file():
        raise ModelRefused(
            f"the sklearn flavor's pickled_model {flavor.get('pickled_model')!r} is not a file "
            "inside the model folder"
        )
    if fmt == "skops":
        model = _load_skops(data, trusted_types(cfg))
    else:
        with open(data, "rb") as fh:
            if fmt == "cloudpickle":
                import cloudpickle

                model = cloudpickle.load(fh)
            else:
                model = pickle.load(fh)  # noqa: S301 - explicitly allowed by configuration
    check_estimator(model, allowed_estimators(cfg))
    return model


def _flavor(root: Path) -> dict[str, Any]:
    mlmodel = root / "MLmodel"
    if not mlmodel.is_file():
        raise ModelRefused("no MLmodel file: not an MLflow model")
    try:
        doc = yaml.safe_load(mlmodel.read_text())
    except yaml.YAMLError as exc:
        raise ModelRefused(f"MLmodel file is not valid YAML: {exc}") from None
    flavors = doc.get("flavors") if isinstance(doc, dict) else None
    flavor = flavors.get(FLAVOR) if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict):
        found = sorted(flavors) if isinstance(flavors, dict) else []
        raise ModelRefused(f"no {FLAVOR!r} flavor in MLmodel (flavors: {found})")
    return flavor


def _load_skops(data: Path, trusted: list[str]) -> Any:
    import skops.io

    try:
        found = skops.io.get_untrusted_types(file=data)
    except Exception as exc:
        raise ModelRefused(f"not a readable skops file: {exc!r}") from None
    untrusted = sorted(set(found) - set(trusted))
    if untrusted:
        raise ModelRefused(
            f"skops file holds types this deployment does not trust: {untrusted}; trusted "
            f"beyond skops' defaults: {trusted} (model_loading.trusted_types)"
        )
    try:
        return skops.io.load(data, trusted=trusted)
    except Exception as exc:
        raise ModelRefused(f"skops refused to load the file: {exc!r}") from None


def check_estimator(model: Any, allowed: list[str]) -> None:
    """Raise `ModelRefused` unless ``model`` is an allowed estimator with ``predict_proba``
    (a Pipeline: each of its steps allowed)."""
    allowed_set = set(allowed)
    name = search.qualified_name(type(model))
    if name not in allowed_set:
        raise ModelRefused(f"estimator {name} is not an allowed model class; allowed: {allowed}")
    steps = getattr(model, "steps", None) if name == search.PIPELINE else None
    if steps is not None:
        if not isinstance(steps, list) or not steps:
            raise ModelRefused("Pipeline without steps")
        for step in steps:
            est = step[1] if isinstance(step, tuple) and len(step) == 2 else step
            step_name = search.qualified_name(type(est))
            if step_name == search.PIPELINE or step_name not in allowed_set:
                raise ModelRefused(
                    f"Pipeline step {step_name} is not an allowed model class; allowed: {allowed}"
                )
        final = steps[-1][1]
    else:
        final = model
    if not callable(getattr(final, "predict_proba", None)):
        raise ModelRefused(
            f"estimator {search.qualified_name(type(final))} has no predict_proba; the model "
            "servers answer class probabilities"
        )
