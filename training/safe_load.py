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
   of them), with ``predict`` (a classifier's ``predict_proba`` is used when it has one).

A refusal raises `ModelRefused`, a `ValueError` whose message says what was found and what is
allowed: callers report it as a failed load of that version.

The model servers load through `load_served`, which serves any MLflow model whose flavor the
deployment allows (``model_loading.allowed_flavors``, default ``[sklearn]``), most specific first:

- ``sklearn``: the rules above (the fast path: one ``predict_proba`` pass for classifiers);
- a native flavor (``lightgbm``, ``xgboost``, ``catboost``): that flavor's own loader, so a
  scikit-learn-API model keeps ``predict_proba`` (class probabilities);
- ``python_function``: `mlflow.pyfunc.load_model`, whatever the model is.

Every loader but the skops path unpickles the artifact or imports its code: listing a flavor
trusts whoever writes to the registry to run code in the model servers. A model without a
signature (and without our ``feature_names`` tag) is refused: nothing would say which columns
it takes. A loader that raises is reported as `ModelLoadFailed` (a `ModelRefused`), so a broken
artifact is one clear message at load, not an error on every request.
"""

from __future__ import annotations

import importlib
import pickle
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml

from configs.settings import ModelLoadingConfig, load_model_loading_config
from training import search
from training.errors import PYFUNC, ModelLoadFailed, ModelRefused

FLAVOR = "sklearn"
# Flavors whose own loader returns the model object (a scikit-learn-API estimator keeps
# predict_proba), in the order they are preferred; python_function is the fallback.
NATIVE_FLAVORS = {
    "lightgbm": "mlflow.lightgbm",
    "xgboost": "mlflow.xgboost",
    "catboost": "mlflow.catboost",
}
SIGNATURE_HINT = (
    "log it with signature=mlflow.models.infer_signature(X, model.predict(X)) so the model "
    "servers know its input columns and their types"
)


@dataclass(eq=False)
class ServedModel:
    """A model loaded for serving: ``flavor`` is how it was loaded (``sklearn``, a native
    flavor, or ``python_function``), ``model`` the estimator or `mlflow.pyfunc.PyFuncModel`.
    The downloaded folder of a non-sklearn model lives as long as this object (a pyfunc may
    read its artifacts when it predicts)."""

    flavor: str
    model: Any


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


def load_served(
    model_uri: str, cfg: ModelLoadingConfig | None = None, *, require_signature: bool = True
) -> ServedModel:
    """Download ``model_uri`` and load it with the most specific flavor the deployment allows
    (see the module docstring). ``require_signature=False`` only for our own versions, whose
    ``feature_names`` tag names the columns. Raises `ModelRefused` / `ModelLoadFailed`."""
    cfg = cfg or load_model_loading_config()
    tmp = tempfile.mkdtemp(prefix="raymlops-model-")
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        served = _load_served_local(Path(local).resolve(), cfg, require_signature)
    except ModelRefused as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise type(exc)(f"{model_uri}: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if served.flavor == FLAVOR:
        shutil.rmtree(tmp, ignore_errors=True)  # the estimator is all in memory
    else:
        weakref.finalize(served, shutil.rmtree, tmp, True)
    return served


def _load_served_local(root: Path, cfg: ModelLoadingConfig, require_signature: bool):
    doc = _mlmodel(root)
    flavors = doc.get("flavors")
    flavors = flavors if isinstance(flavors, dict) else {}
    if require_signature and not doc.get("signature"):
        raise ModelRefused(f"the model has no signature: {SIGNATURE_HINT}")
    flavor = choose_flavor(list(flavors), list(cfg.allowed_flavors))
    if flavor == FLAVOR:
        return ServedModel(FLAVOR, load_local(root, cfg))
    if flavor in NATIVE_FLAVORS:
        model = _guarded_load(flavor, lambda: _native_loader(flavor)(str(root)))
        if _sklearn_api(model):
            return ServedModel(flavor, model)
        # A native booster (not the scikit-learn API): its pyfunc predicts as MLflow does.
    model = _guarded_load(PYFUNC, lambda: mlflow.pyfunc.load_model(str(root)))
    return ServedModel(PYFUNC, model)


def choose_flavor(found: list[str], allowed: list[str]) -> str:
    """The flavor to load an artifact with ``found`` flavors by: sklearn, then a native
    flavor, then python_function, each only when ``allowed``; else `ModelRefused`."""
    for flavor in (FLAVOR, *NATIVE_FLAVORS, PYFUNC):
        if flavor in found and flavor in allowed:
            return flavor
    raise ModelRefused(
        f"the model's flavors {sorted(found)} are not loaded by this deployment, which loads "
        f"{sorted(allowed)} (model_loading.allowed_flavors). Loading any flavor but sklearn "
        "(skops) unpickles the artifact or imports its code, which can run arbitrary code: add "
        f"one of {sorted(set(found) & {PYFUNC, *NATIVE_FLAVORS})} only for a registry whose "
        "writers you trust"
    )


def _native_loader(flavor: str):
    return importlib.import_module(NATIVE_FLAVORS[flavor]).load_model


def _sklearn_api(model: Any) -> bool:
    return callable(getattr(model, "predict", None)) and callable(
        getattr(model, "get_params", None)
    )


def _guarded_load(flavor: str, load) -> Any:
    try:
        return load()
    except Exception as exc:
        raise ModelLoadFailed(f"loading the {flavor} flavor raised {exc!r}"[:2000]) from None


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


def _mlmodel(root: Path) -> dict[str, Any]:
    mlmodel = root / "MLmodel"
    if not mlmodel.is_file():
        raise ModelRefused("no MLmodel file: not an MLflow model")
    try:
        doc = yaml.safe_load(mlmodel.read_text())
    except yaml.YAMLError as exc:
        raise ModelRefused(f"MLmodel file is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelRefused("MLmodel file is not a mapping: not an MLflow model")
    return doc


def _flavor(root: Path) -> dict[str, Any]:
    flavors = _mlmodel(root).get("flavors")
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
    """Raise `ModelRefused` unless ``model`` is an allowed estimator with ``predict`` (a
    Pipeline: each of its steps allowed)."""
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
    if not callable(getattr(final, "predict", None)):
        raise ModelRefused(
            f"estimator {search.qualified_name(type(final))} has no predict: not a model the "
            "servers can answer with (a transformer?)"
        )
