"""Drift reference and retraining recipe of models our training did not register.

Real MLflow on a SQLite copy of the unit-test template registry; the monitor's core driven
with a hand-moved clock."""

from __future__ import annotations

import asyncio
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import Ridge

from configs import DriftConfig
from monitoring.core import DriftMonitorCore
from monitoring.reference import resolve_reference
from training import registry
from training.data import PREDICTION_COLUMN
from training.recipe import ENTRY_POINT, NOT_CONFIGURED, OURS, recipe_for

FEATURES = ["a", "b", "c"]
NAME = "foreign"


@pytest.fixture
def uri(template, tmp_path):
    db = tmp_path / "mlflow.db"
    shutil.copy(template, db)
    uri = f"sqlite:///{db}"
    registry.use_tracking_uri(uri)
    mlflow.set_experiment(
        experiment_id=registry.ensure_experiment(registry.get_client(uri), "t", uri)
    )
    return uri


def frame(n: int, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(shift, 1.0, size=(n, len(FEATURES))), columns=FEATURES)


def register_ridge(
    *,
    example_rows: int = 0,
    dataset: str | None = None,
    dataset_path: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """A Ridge regressor as a user would log it: a signature, optionally an input example
    of ``example_rows`` rows, a dataset via log_input (``dataset``: "pandas" without a
    source, "file" with ``dataset_path`` as its source); never our reference artifact."""
    X = frame(300)
    y = X.sum(axis=1) + 1.0
    model = Ridge().fit(X, y)
    with mlflow.start_run():
        if dataset == "pandas":
            mlflow.log_input(mlflow.data.from_pandas(X.assign(target=y), targets="target"))
        elif dataset == "file":
            X.assign(target=y).to_csv(dataset_path, index=False)
            source_df = pd.read_csv(dataset_path)
            ds = mlflow.data.from_pandas(source_df, source=dataset_path, targets="target")
            mlflow.log_input(ds)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(example_rows) if example_rows else None,
            pip_requirements=["scikit-learn"],
        )
    return str(mlflow.register_model(info.model_uri, NAME, tags=tags or {}).version)


def test_recipe_is_ours_only_for_our_families():
    assert recipe_for({"family": "random_forest"}, None) == OURS
    assert recipe_for({"family": "ridge"}, "pkg.mod:fit") == OURS
    # A family tag of someone else's naming is not ours.
    assert recipe_for({"family": "lightgbm"}, None) == NOT_CONFIGURED
    assert recipe_for({}, None) == NOT_CONFIGURED
    assert recipe_for(None, "tests.recipes:fit_ridge") == ENTRY_POINT


def test_our_reference_artifact_comes_first(uri, tmp_path):
    ref = frame(50, seed=3).assign(**{registry.LABEL_COLUMN: 1.0, PREDICTION_COLUMN: 2.0})
    path = tmp_path / "reference_sample.csv"
    ref.to_csv(path, index=False)
    X = frame(300)
    model = Ridge().fit(X, X.sum(axis=1))
    with mlflow.start_run():
        mlflow.log_artifact(str(path), artifact_path="reference")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            pip_requirements=["scikit-learn"],
        )
    tags = {"task": "regression", "test_rmse": "0.5", "family": "ridge"}
    version = str(mlflow.register_model(info.model_uri, NAME, tags=tags).version)
    out = resolve_reference(registry.get_client(uri), NAME, version)
    assert out["reference_source"] == "artifact"
    np.testing.assert_allclose(out["reference_features"], ref[FEATURES].to_numpy())
    assert out["baseline_rmse"] == 0.5
    assert list(out["reference_predictions"]) == [2.0] * 50


def test_a_logged_dataset_with_a_file_source_is_the_reference(uri, tmp_path):
    version = register_ridge(dataset="file", dataset_path=str(tmp_path / "train.csv"))
    out = resolve_reference(registry.get_client(uri), NAME, version)
    assert out["reference_source"] == "logged_dataset"
    assert out["feature_names"] == FEATURES
    np.testing.assert_allclose(out["reference_features"], frame(300).to_numpy(), rtol=1e-9)
    # The one column beside the features is the target.
    expected = (frame(300).sum(axis=1) + 1.0).to_numpy()
    np.testing.assert_allclose(out["reference_labels"], expected, rtol=1e-9)
    assert out["task"] == "regression"
    assert np.isnan(out["baseline_rmse"])  # no test_rmse tag: the error detector stays off


def test_a_sourceless_dataset_falls_back_to_a_large_input_example(uri):
    version = register_ridge(dataset="pandas", example_rows=120)
    out = resolve_reference(registry.get_client(uri), NAME, version, min_reference_rows=100)
    assert out["reference_source"] == "input_example"
    np.testing.assert_allclose(out["reference_features"], frame(300).head(120).to_numpy())


def test_a_small_input_example_means_a_live_reference(uri):
    version = register_ridge(dataset="pandas", example_rows=5)
    out = resolve_reference(registry.get_client(uri), NAME, version, min_reference_rows=100)
    assert out["reference_source"] == "live"
    assert out["reference_features"] is None
    assert out["feature_names"] == FEATURES  # from the signature


def live_core(**overrides) -> DriftMonitorCore:
    cfg = dict(
        feedback_grace_s=0,
        window_size=400,
        label_window_size=100,
        min_samples=100,
        min_labelled=50,
        min_new_samples=50,
        hysteresis_count=2,
        cooldown_s=0,
        live_reference_rows=200,
    )
    return DriftMonitorCore(DriftConfig(**(cfg | overrides)))


def feed(core: DriftMonitorCore, X: pd.DataFrame, version: str = "1", start: int = 0) -> None:
    preds = X.sum(axis=1).to_numpy()
    core.add_records(
        [
            {
                "request_id": f"r{start + i}",
                "features": X.iloc[i].tolist(),
                "prediction": float(preds[i]),
                "model_version": version,
            }
            for i in range(len(X))
        ]
    )


def test_live_reference_fills_then_a_shift_fires():
    core = live_core()
    core.set_reference("1", None, feature_names=FEATURES, task="regression", baseline_rmse=None)
    feed(core, frame(150, seed=1))
    rep = core.evaluate()
    assert rep.skipped["ks"] == "collecting reference (150 of 200 rows)"
    assert not rep.fired.get("ks") and not rep.fired.get("psi")
    st = core.status()
    assert st["reference_source"] == "live"
    assert st["reference_collecting"] == "collecting reference (150 of 200 rows)"
    # The error detector has no baseline and says so.
    assert "no baseline RMSE" in rep.skipped["error"]
    # 100 more rows: 50 complete the reference, the next 50 are the first analysis rows.
    feed(core, frame(100, seed=2), start=150)
    assert core.status()["reference_collecting"] is None
    v = core._versions["1"]
    assert v.reference.shape == (200, 3) and v.live_rows == []  # bounded: nothing kept beyond
    feed(core, frame(100, seed=4), start=250)  # same distribution: quiet
    rep = core.evaluate()
    assert rep.n_current == 150 and not rep.fired.get("ks")
    fired = False
    for k in range(3):
        feed(core, frame(150, seed=10 + k, shift=2.0), start=400 + 150 * k)
        core.evaluate()
        fire, _, numbers = core.should_retrain()
        fired = fired or fire
        if fire:
            assert "ks" in numbers["detectors"]
            break
    assert fired


def test_live_reference_classifier_uses_its_own_predictions_for_chi2():
    core = live_core(live_reference_rows=100)
    core.set_reference("1", None, feature_names=FEATURES, classes=[0, 1], baseline_accuracy=None)
    X = frame(100, seed=1)
    core.add_records(
        [
            {
                "request_id": f"c{i}",
                "features": X.iloc[i].tolist(),
                "prediction": int(i % 4 == 0),
                "model_version": "1",
            }
            for i in range(100)
        ]
    )
    v = core._versions["1"]
    assert v.reference is not None and v.reference_classes.count(1) == 25
    rep = core.evaluate()
    assert "no baseline accuracy" in rep.skipped["accuracy"]


def test_a_new_champion_resolves_its_own_reference():
    core = live_core(live_reference_rows=100)
    core.set_reference("1", None, feature_names=FEATURES, task="regression")
    feed(core, frame(100))
    assert core.status()["reference_collecting"] is None
    core.set_reference(
        "2",
        frame(300).to_numpy(),
        feature_names=FEATURES,
        task="regression",
        reference_source="logged_dataset",
    )
    st = core.status()
    assert st["champion"] == "2" and st["reference_source"] == "logged_dataset"
    core.set_reference("3", None, feature_names=FEATURES, task="regression")
    assert core.status()["reference_collecting"] == "collecting reference (0 of 100 rows)"


class _Controller:
    """The RolloutController's poll answer: champion "1", no rollout."""

    class _Poll:
        async def remote(self, *_):
            return {"champion": "1", "rollout": None}

    poll = _Poll()


def test_monitor_records_not_configured_and_starts_nothing(uri):
    """DriftMonitor's evaluation step (its plain methods, without Ray) for a foreign champion
    and no entry point: the alert stands, status says not configured, one event per firing."""
    from monitoring.metrics import Metrics
    from monitoring.monitor import MONITOR_METRICS, DriftMonitor

    version = register_ridge(example_rows=5)
    registry.set_alias(registry.get_client(uri), NAME, registry.CHAMPION, version)
    monitor = object.__new__(DriftMonitor.func_or_class)
    # One trigger within the cooldown: one not-configured event, however long the drift lasts.
    drift = live_core(live_reference_rows=200, cooldown_s=600).cfg
    monitor._args = {"model_name": NAME}
    monitor._drift = drift.model_dump()
    monitor._retraining = {"entry_point": None}
    monitor._client = registry.get_client(uri)
    monitor._core = DriftMonitorCore(drift)
    monitor._stats, monitor._timeline = {}, []
    monitor._metrics = Metrics.create(MONITOR_METRICS)
    monitor._reference_for = monitor._reference_source = monitor._recipe = None
    monitor._retrain_task = monitor._last_retraining = None
    monitor._controller = _Controller()

    async def run() -> dict:
        await monitor._evaluate_once()
        st = await monitor.status()
        assert st["reference_source"] == "live" and st["retraining"]["recipe"] == NOT_CONFIGURED
        feed(monitor._core, frame(200, seed=1), version=version)
        for k in range(4):
            feed(
                monitor._core,
                frame(150, seed=10 + k, shift=2.0),
                version=version,
                start=1000 * (k + 1),
            )
            await monitor._evaluate_once()
        return await monitor.status()

    st = asyncio.run(run())
    assert st["detectors"]["ks"] is True
    assert st["last_retraining"]["retraining"] == NOT_CONFIGURED
    assert st["retraining_running"] is False and st["retraining"]["started"] == 0
    events = [e["event"] for e in st["timeline"]]
    assert events.count("retraining_not_configured") == 1
    assert "retraining_started" not in events
    ref_event = next(e for e in st["timeline"] if e["event"] == "reference")
    assert ref_event["reference_source"] == "live"


class Doubler:
    """A fitted model that is not a scikit-learn estimator (an entry point may return one)."""

    def predict(self, X):
        return np.asarray(X, dtype=float).sum(axis=1) * 2.0


def test_a_non_sklearn_winner_is_logged_as_pyfunc_with_a_signature(uri):
    from mlflow.models import Model

    from training.recipe import log_fitted

    X = frame(20)
    with mlflow.start_run():
        info = log_fitted(Doubler(), X)
    model = Model.load(info.model_uri)
    assert "python_function" in model.flavors and "sklearn" not in model.flavors
    assert [c.name for c in model.signature.inputs] == FEATURES
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_allclose(loaded.predict(X), X.sum(axis=1) * 2.0)


def test_our_version_without_its_artifact_is_an_error_not_a_weaker_reference(uri):
    """A version of ours always has the artifact: failing to read it (an outage, a deleted
    file) must be retried, not silently replaced by a live reference."""
    version = register_ridge(example_rows=5, tags={"family": "ridge", "task": "regression"})
    with pytest.raises(Exception):  # noqa: B017 - whatever MLflow raises for the missing file
        resolve_reference(registry.get_client(uri), NAME, version)


# ---- a model with a string (categorical) column ------------------------------------------------
def colored(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"x": rng.normal(size=n), "color": rng.choice(["red", "green"], n), "z": rng.normal(size=n)}
    )


def register_colored(source: str, dataset_path: str) -> str:
    """A OneHotEncoder pipeline over "color" whose reference is a logged dataset file, or a
    large input example (``source``)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = colored(200)
    y = (X["x"] > 0).astype(int)
    encode = ColumnTransformer([("oh", OneHotEncoder(), ["color"])], remainder="passthrough")
    model = Pipeline([("pre", encode), ("clf", LogisticRegression())]).fit(X, y)
    with mlflow.start_run():
        if source == "logged_dataset":
            X.assign(target=y).to_csv(dataset_path, index=False)
            ds = mlflow.data.from_pandas(
                pd.read_csv(dataset_path), source=dataset_path, targets="target"
            )
            mlflow.log_input(ds)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(150) if source == "input_example" else None,
            pip_requirements=["scikit-learn"],
        )
    return str(mlflow.register_model(info.model_uri, NAME).version)


@pytest.mark.parametrize("source", ["logged_dataset", "input_example"])
def test_a_string_column_stays_text_in_the_reference_and_is_skipped_by_ks_psi(
    source, uri, tmp_path
):
    version = register_colored(source, str(tmp_path / "train.csv"))
    out = resolve_reference(registry.get_client(uri), NAME, version, min_reference_rows=100)
    assert out["reference_source"] == source
    assert out["feature_names"] == ["x", "color", "z"]
    ref = out["reference_features"]
    n = len(ref)
    assert set(ref[:, 1]) == {"red", "green"}
    np.testing.assert_allclose(ref[:, 0].astype(float), colored(200)["x"][:n], rtol=1e-9)
    core = DriftMonitorCore(DriftConfig(min_samples=50, window_size=500))
    core.set_reference(version, **out)
    rows = colored(100, seed=1).to_numpy(dtype=object)
    counts = core.add_records(
        [{"model_version": version, "features": rows, "predictions": [1] * 100, "error": None}]
    )
    assert counts["accepted"] == 1 and counts["rows"] == 100
    rep = core.evaluate()
    assert "color" in rep.skipped["string_columns"]
    assert [f.name for f in rep.features] == ["x", "z"] and "ks" in rep.fired
