"""Where a champion's drift reference comes from, for models our training did not register too.

Drift detection compares live rows with a *reference* sample (Evidently and NannyML call the
two the analysis and the reference period). Our training logs one with every version
(`registry.REFERENCE_ARTIFACT`); a model registered by someone else does not have it, and
without a reference the detectors cannot run at all. `resolve_reference` takes the first of
these that works, and says which (``reference_source``):

1. ``artifact``: our reference CSV (features, labels, a regressor's predictions);
2. ``logged_dataset``: the dataset logged with the model's run (``mlflow.log_input``) when its
   source can be loaded here (a local file, a file or CSV/Parquet artifact); a
   ``from_pandas`` dataset without a source records only a digest and cannot be;
3. ``input_example``: the model's logged input example, when it has at least
   ``min_reference_rows`` rows (examples usually have a handful, too few for KS or PSI);
4. ``live``: none of the above; the first ``live_reference_rows`` rows the champion serves
   become the reference (`DriftMonitorCore` collects them, bounded).

A model whose signature has string (categorical) columns gets them as text in the reference,
from any of these sources: the monitor leaves them out of KS and PSI and says so.

A version our training registered (`training.recipe.is_ours`) uses its artifact only: failing
to read it raises, as a registry outage must not swap its reference for a weaker one.
The performance baselines always come from the version's tags (``test_accuracy`` /
``test_rmse``); without them the accuracy / error detector is off and says so in status.
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from training import registry
from training.data import PREDICTION_COLUMN
from training.recipe import is_ours

log = logging.getLogger(__name__)

ARTIFACT = "artifact"
LOGGED_DATASET = "logged_dataset"
INPUT_EXAMPLE = "input_example"
LIVE = "live"


def version_task(info: Any) -> str:
    """The task of a version (`VersionInfo.task`, else its tags; classification for old
    versions that have neither)."""
    task = getattr(info, "task", None)
    if task:
        return str(task)
    tags = getattr(info, "tags", None) or {}
    return tags.get("mlops.task") or tags.get("task") or "classification"


def _tag_float(info: Any, tag: str) -> float:
    return float(info.tags.get(tag, "nan"))


def load_reference(
    client, model_name: str, version: str
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """The reference sample logged with ``version`` at training: features, labels and, for
    a regressor, the model's predictions on those rows (None when not logged)."""
    info = registry.version_info(client, model_name, version)
    path = client.download_artifacts(info.run_id, registry.REFERENCE_ARTIFACT)
    with open(path) as fh:
        frame = pd.read_csv(io.StringIO(fh.read()))
    labels = frame.pop(registry.LABEL_COLUMN).to_numpy()
    preds = frame.pop(PREDICTION_COLUMN).to_numpy() if PREDICTION_COLUMN in frame else None
    return frame, labels, preds


def _read_table(path: str) -> pd.DataFrame:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in (".csv", ".parquet"))
        if not files:
            raise ValueError(f"no CSV or Parquet file under {path}")
        p = files[0]
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    return pd.read_csv(p)


def string_features(info: Any) -> set[str]:
    """Columns the version's signature types ``string`` (categorical): kept as text in a
    reference frame, where every other column becomes float."""
    return {
        s.get("name")
        for s in getattr(info, "input_schema", None) or ()
        if s.get("type") == "string"
    }


def _typed(frame: pd.DataFrame, strings: set[str]) -> pd.DataFrame:
    """``frame`` with its numeric columns as float and its string columns as objects (the
    monitor leaves those out of KS and PSI: `monitoring.windows.feature_matrix`)."""
    if not strings & set(frame.columns):
        return frame.astype(float)
    return frame.astype({c: object if c in strings else float for c in frame.columns})


def _features_and_labels(
    frame: pd.DataFrame, feature_names: list[str], strings: set[str] | None = None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The model's feature columns of ``frame`` (``strings``: those typed string) and, when
    exactly one other column is left (the dataset's target), its values as labels."""
    missing = [c for c in feature_names if c not in frame.columns]
    if not feature_names or missing:
        raise ValueError(f"feature columns missing from the dataset: {missing or 'all'}")
    rest = [c for c in frame.columns if c not in feature_names]
    labels = frame[rest[0]].to_numpy() if len(rest) == 1 else None
    return _typed(frame[feature_names], strings or set()), labels


def logged_dataset(client, info: Any) -> tuple[pd.DataFrame, np.ndarray | None] | None:
    """Features (and target) of the first loadable dataset logged with ``info``'s run."""
    import mlflow.data

    if not info.run_id:
        return None
    run = client.get_run(info.run_id)
    for dataset_input in run.inputs.dataset_inputs or []:
        try:
            source = mlflow.data.get_source(dataset_input)
            with tempfile.TemporaryDirectory(prefix="raymlops-ref-") as tmp:
                frame = _read_table(source.load(dst_path=tmp))
            return _features_and_labels(frame, list(info.feature_names), string_features(info))
        except (NotImplementedError, MlflowException, OSError, ValueError) as exc:
            name = dataset_input.dataset.name
            log.info("reference: logged dataset %s of v%s not usable: %s", name, info.version, exc)
    return None


def input_example(client, info: Any, min_rows: int) -> pd.DataFrame | None:
    """The model's logged input example as a frame of its feature columns, when it has at
    least ``min_rows`` rows."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    location = client.get_model_version_download_uri(info.name, info.version)
    with tempfile.TemporaryDirectory(prefix="raymlops-ref-") as tmp:
        model = Model.load(registry.model_uri(info.name, info.version))
        meta = model.saved_input_example_info
        if not meta:
            return None
        download_artifacts(artifact_uri=f"{location}/{meta['artifact_path']}", dst_path=tmp)
        example = model.load_input_example(tmp)
    frame = example if isinstance(example, pd.DataFrame) else pd.DataFrame(np.asarray(example))
    if len(frame) < min_rows:
        log.info("reference: v%s input example: %d rows < %d", info.version, len(frame), min_rows)
        return None
    names = list(info.feature_names)
    if names and all(c in frame.columns for c in names):
        frame = frame[names]
    return _typed(frame, string_features(info))


def resolve_reference(
    client, model_name: str, version: str, min_reference_rows: int = 100
) -> dict[str, Any]:
    """`DriftMonitorCore.set_reference` keyword arguments for ``version`` plus
    ``reference_source`` (see the module docstring); ``reference_features`` is None for a
    live reference. Task, classes and the baselines recorded at registration (tag
    ``test_accuracy`` for a classifier, ``test_rmse`` for a regressor; NaN when absent: that
    detector is off) come from the version either way."""
    info = registry.version_info(client, model_name, version)
    task = version_task(info)
    regression = task == "regression"
    out: dict[str, Any] = {
        "task": task,
        "classes": None if regression else info.classes,
        "baseline_accuracy": None if regression else _tag_float(info, "test_accuracy"),
        "baseline_rmse": _tag_float(info, "test_rmse") if regression else None,
        "reference_labels": None,
        "reference_predictions": None,
        "feature_names": list(info.feature_names) or None,
    }
    if is_ours(info.tags):
        # Our training always logs the artifact: a failure to read it is an error to retry
        # (the registry may be down), never a reason to settle for a weaker reference.
        return (
            out
            | _from_artifact(client, model_name, version, regression)
            | {"reference_source": ARTIFACT}
        )
    for source, attempt in (
        (ARTIFACT, lambda: _from_artifact(client, model_name, version, regression)),
        (LOGGED_DATASET, lambda: _from_dataset(client, info)),
        (INPUT_EXAMPLE, lambda: _from_example(client, info, min_reference_rows)),
    ):
        try:
            found = attempt()
        except (MlflowException, OSError, ValueError, KeyError) as exc:
            log.info("reference: %s of %s v%s not usable: %s", source, model_name, version, exc)
            continue
        if found is not None:
            return out | found | {"reference_source": source}
    return out | {"reference_features": None, "reference_source": LIVE}


def _from_artifact(client, model_name: str, version: str, regression: bool) -> dict[str, Any]:
    frame, labels, preds = load_reference(client, model_name, version)
    return {
        "reference_features": frame.to_numpy(),
        "reference_labels": labels,
        "feature_names": list(frame.columns),
        "reference_predictions": preds if regression else None,
    }


def _from_dataset(client, info: Any) -> dict[str, Any] | None:
    found = logged_dataset(client, info)
    if found is None:
        return None
    frame, labels = found
    return {
        "reference_features": frame.to_numpy(),
        "reference_labels": labels,
        "feature_names": list(frame.columns),
    }


def _from_example(client, info: Any, min_rows: int) -> dict[str, Any] | None:
    frame = input_example(client, info, min_rows)
    if frame is None:
        return None
    return {"reference_features": frame.to_numpy(), "feature_names": [str(c) for c in frame]}
