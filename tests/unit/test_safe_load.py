"""Model loading trusts the deployment's lists, not the artifact's (no Ray; real MLflow SQLite).

A registry writer controls the artifact, including its MLmodel file (serialization format,
skops trusted types): those must not widen what the model servers load."""

import asyncio
import pickle

import mlflow
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from configs.settings import ModelLoadingConfig
from deployments.model_server import ModelServer
from training import registry, safe_load
from training.data import load_dataset
from training.safe_load import ModelRefused


class Sneaky(LogisticRegression):
    """A custom class: anything outside scikit-learn could run code when built."""


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('safe_load') / 'mlflow.db'}"
    registry.use_tracking_uri(uri)
    registry.ensure_experiment(registry.get_client(uri), "safe_load", uri)
    return uri


@pytest.fixture(scope="module")
def data():
    X, y = load_dataset("breast_cancer")
    return X.iloc[:200], y.iloc[:200]


def log_and_register(uri, name, model, **kwargs) -> str:
    registry.use_tracking_uri(uri)
    exp = registry.get_client(uri).get_experiment_by_name("safe_load").experiment_id
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.sklearn.log_model(model, name="model", **kwargs)
    return str(mlflow.register_model(info.model_uri, name).version)


def test_pickle_format_is_refused_by_default(uri, data):
    X, y = data
    model = Pipeline([("model", LogisticRegression(max_iter=2000))]).fit(X, y)
    version = log_and_register(uri, "pickled", model, serialization_format="pickle")
    with pytest.raises(ModelRefused, match=r"serialized as 'pickle'.*only \['skops'\]"):
        registry.load_model(uri, "pickled", version)


def test_pickle_loads_only_when_the_deployment_allows_it(uri, data, tmp_path):
    X, y = data
    model = Pipeline([("model", LogisticRegression(max_iter=2000))]).fit(X, y)
    path = tmp_path / "m"
    mlflow.sklearn.save_model(model, str(path), serialization_format="cloudpickle")
    allow = ModelLoadingConfig(allowed_formats=["skops", "cloudpickle"])
    loaded = safe_load.load_local(path, allow)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # Allowing the format does not allow any class: the estimator check still applies.
    other = tmp_path / "tree"
    tree = DecisionTreeClassifier(random_state=0).fit(X, y)
    mlflow.sklearn.save_model(tree, str(other), serialization_format="cloudpickle")
    with pytest.raises(ModelRefused, match="DecisionTreeClassifier is not an allowed model"):
        safe_load.load_local(other, allow)


def test_custom_type_is_refused_even_when_the_artifact_trusts_it(uri, data):
    X, y = data
    model = Pipeline([("model", Sneaky(max_iter=2000))]).fit(X, y)
    sneaky = f"{Sneaky.__module__}.Sneaky"
    # The artifact's own MLmodel lists the type as trusted: mlflow.sklearn.load_model loads it.
    version = log_and_register(uri, "sneaky", model, skops_trusted_types=[sneaky])
    assert type(mlflow.sklearn.load_model(f"models:/sneaky/{version}")[-1]) is Sneaky
    with pytest.raises(ModelRefused, match=rf"does not trust: \['{sneaky}'\]"):
        registry.load_model(uri, "sneaky", version)
    # Trusted by the deployment's config, it loads as a type; its class is still not allowed.
    loose = ModelLoadingConfig(trusted_types=[sneaky])
    with pytest.raises(ModelRefused, match="Sneaky is not an allowed model class"):
        safe_load.load_model_uri(f"models:/sneaky/{version}", loose)


def test_sklearn_class_outside_the_model_families_is_refused(uri, data):
    """skops trusts every scikit-learn estimator by default, and a single tree needs only the
    Tree type the forests need; the deployment loads only its own families' classes."""
    X, y = data
    tree = "sklearn.tree._classes.DecisionTreeClassifier"
    model = Pipeline([("model", DecisionTreeClassifier(random_state=0))]).fit(X, y)
    version = log_and_register(uri, "tree", model, skops_trusted_types=["sklearn.tree._tree.Tree"])
    with pytest.raises(ModelRefused, match=f"step {tree} is not an allowed model class"):
        registry.load_model(uri, "tree", version)
    allow = ModelLoadingConfig(allowed_estimators=[tree])
    loaded = safe_load.load_model_uri(f"models:/tree/{version}", allow)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_artifact_without_sklearn_flavor_or_with_a_path_outside_is_refused(tmp_path, data):
    X, y = data
    path = tmp_path / "m"
    mlflow.sklearn.save_model(
        Pipeline([("model", LogisticRegression(max_iter=5000))]).fit(X, y), str(path)
    )
    text = (path / "MLmodel").read_text()
    (path / "MLmodel").write_text(text.replace("pickled_model: model.skops", "pickled_model: ../x"))
    with pytest.raises(ModelRefused, match="not a file inside the model folder"):
        safe_load.load_local(path)
    (path / "MLmodel").write_text("flavors: {python_function: {}}\n")
    with pytest.raises(ModelRefused, match=r"no 'sklearn' flavor in MLmodel \(flavors: \['py"):
        safe_load.load_local(path)


def test_model_without_predict_proba_is_refused():
    with pytest.raises(ModelRefused, match="has no predict_proba"):
        safe_load.check_estimator(
            Pipeline([("scale", StandardScaler())]),
            safe_load.allowed_estimators(ModelLoadingConfig()),
        )


def test_model_server_records_a_refused_version_and_keeps_following(uri, data):
    """The replica's follow step survives a refused version: it is reported by load_errors,
    not loaded, and not downloaded again on the next state."""
    X, y = data
    version = log_and_register(
        uri,
        "served",
        Pipeline([("model", LogisticRegression(max_iter=5000))]).fit(X, y),
        serialization_format="pickle",
    )
    server = object.__new__(ModelServer.func_or_class)
    server._slot, server._args = "blue", {"tracking_uri": uri, "model_name": "served"}
    server._model, server._refused, server._load_lock = None, {}, asyncio.Lock()

    async def follow_twice():
        await server._follow_state({"epoch": 1, "slots": {"blue": version}})
        await server._follow_state({"epoch": 2, "slots": {"blue": version}})

    asyncio.run(follow_twice())
    assert server._model is None and server._epoch == 2
    assert "serialized as 'pickle'" in server.load_errors()[version]
    with pytest.raises(ModelRefused):
        asyncio.run(server._ensure(version))


def test_pickle_is_never_read_before_the_format_check(tmp_path, data):
    """A refused format is refused from the MLmodel file alone: the payload is not opened."""
    X, y = data
    path = tmp_path / "m"
    model = Pipeline([("model", LogisticRegression(max_iter=5000))]).fit(X, y)
    mlflow.sklearn.save_model(model, str(path), serialization_format="pickle")
    (path / "model.pkl").write_bytes(pickle.dumps(model)[:10])  # would fail to unpickle
    with pytest.raises(ModelRefused, match="serialized as 'pickle'"):
        safe_load.load_local(path)
