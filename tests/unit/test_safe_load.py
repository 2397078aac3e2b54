"""Model loading trusts the deployment's lists, not the artifact's (no Ray; real MLflow SQLite).

A registry writer controls the artifact, including its MLmodel file (serialization format,
skops trusted types): those must not widen what the model servers load."""

import asyncio
import pickle

import mlflow
import numpy as np
import pytest
from mlflow.models import infer_signature
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
        info = mlflow.sklearn.log_model(
            model, name="model", **kwargs, pip_requirements=["scikit-learn"]
        )
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
    mlflow.sklearn.save_model(
        model, str(path), serialization_format="cloudpickle", pip_requirements=["scikit-learn"]
    )
    allow = ModelLoadingConfig(allowed_formats=["skops", "cloudpickle"])
    loaded = safe_load.load_local(path, allow)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # Allowing the format does not allow any class: the estimator check still applies.
    other = tmp_path / "tree"
    tree = DecisionTreeClassifier(random_state=0).fit(X, y)
    mlflow.sklearn.save_model(
        tree, str(other), serialization_format="cloudpickle", pip_requirements=["scikit-learn"]
    )
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
        Pipeline([("model", LogisticRegression(max_iter=5000))]).fit(X, y),
        str(path),
        pip_requirements=["scikit-learn"],
    )
    text = (path / "MLmodel").read_text()
    (path / "MLmodel").write_text(text.replace("pickled_model: model.skops", "pickled_model: ../x"))
    with pytest.raises(ModelRefused, match="not a file inside the model folder"):
        safe_load.load_local(path)
    (path / "MLmodel").write_text("flavors: {python_function: {}}\n")
    with pytest.raises(ModelRefused, match=r"no 'sklearn' flavor in MLmodel \(flavors: \['py"):
        safe_load.load_local(path)


def test_model_without_predict_is_refused():
    with pytest.raises(ModelRefused, match="StandardScaler has no predict"):
        safe_load.check_estimator(
            Pipeline([("scale", StandardScaler())]),
            safe_load.allowed_estimators(ModelLoadingConfig()),
        )


def test_model_server_records_a_refused_version_and_keeps_following(uri, data):
    """The replica's follow step survives a refused version: it is reported by load_errors,
    not loaded, and not downloaded again on the next state."""
    X, y = data
    model = Pipeline([("model", LogisticRegression(max_iter=5000))]).fit(X, y)
    version = log_and_register(
        uri,
        "served",
        model,
        serialization_format="pickle",
        signature=infer_signature(X, model.predict(X)),
    )
    server = object.__new__(ModelServer.func_or_class)
    server._slot, server._args = "blue", {"tracking_uri": uri, "model_name": "served"}
    server._model, server._refused, server._load_lock = None, {}, asyncio.Lock()
    server._refused_kind = {}

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
    mlflow.sklearn.save_model(
        model, str(path), serialization_format="pickle", pip_requirements=["scikit-learn"]
    )
    (path / "model.pkl").write_bytes(pickle.dumps(model)[:10])  # would fail to unpickle
    with pytest.raises(ModelRefused, match="serialized as 'pickle'"):
        safe_load.load_local(path)


# ---- any MLflow flavor, as the deployment allows (issue 13) -------------------------------


class Doubler(mlflow.pyfunc.PythonModel):
    """A custom pyfunc: what a team registers with its own code."""

    def predict(self, context, model_input, params=None):
        return model_input * 2.0


class BrokenOnLoad(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("weights file is corrupt")

    def predict(self, context, model_input, params=None):
        return model_input


PYFUNC_ONLY = ModelLoadingConfig(allowed_flavors=["python_function"])


def save_pyfunc(path, model, X=None):
    signature = infer_signature(X, X * 2.0) if X is not None else None
    mlflow.pyfunc.save_model(
        str(path), python_model=model, signature=signature, pip_requirements=["pandas"]
    )
    return str(path)


def test_a_flavor_the_deployment_does_not_list_is_refused_naming_the_risk(tmp_path, data):
    X, _ = data
    path = save_pyfunc(tmp_path / "m", Doubler(), X.iloc[:, :3])
    with pytest.raises(ModelRefused) as err:
        safe_load.load_served(path)
    msg = str(err.value)
    assert "flavors ['python_function'] are not loaded" in msg
    assert "model_loading.allowed_flavors" in msg and "arbitrary code" in msg
    served = safe_load.load_served(path, PYFUNC_ONLY)
    assert served.flavor == "python_function"
    cols = X.iloc[:5, :3]
    np.testing.assert_allclose(served.model.predict(cols).to_numpy(), cols.to_numpy() * 2.0)


def test_a_model_without_signature_is_refused_at_load(tmp_path):
    path = save_pyfunc(tmp_path / "m", Doubler())
    with pytest.raises(ModelRefused, match=r"has no signature: log it with signature=mlflow"):
        safe_load.load_served(path, PYFUNC_ONLY)


def test_a_loader_that_raises_is_a_load_failure_with_its_error(tmp_path, data):
    X, _ = data
    path = save_pyfunc(tmp_path / "m", BrokenOnLoad(), X.iloc[:, :3])
    with pytest.raises(safe_load.ModelLoadFailed, match="weights file is corrupt"):
        safe_load.load_served(path, PYFUNC_ONLY)


def test_sklearn_flavor_keeps_its_rules_and_pyfunc_is_only_a_listed_fallback(tmp_path, data):
    """A cloudpickled sklearn model: refused by the sklearn rules (format); with sklearn not
    listed but python_function listed, the deployment chose to load it through pyfunc."""
    X, y = data
    model = Pipeline([("model", LogisticRegression(max_iter=5000))]).fit(X, y)
    path = tmp_path / "m"
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="cloudpickle",
        signature=infer_signature(X, y),
        pip_requirements=["scikit-learn"],
    )
    both = ModelLoadingConfig(allowed_flavors=["sklearn", "python_function"])
    with pytest.raises(ModelRefused, match="serialized as 'cloudpickle'"):
        safe_load.load_served(str(path), both)
    served = safe_load.load_served(str(path), PYFUNC_ONLY)
    assert served.flavor == "python_function"
    np.testing.assert_array_equal(served.model.predict(X), model.predict(X))


def test_version_info_describes_a_model_we_did_not_train_from_its_signature(uri, data):
    """No tag of ours: feature names, types and the task come from the MLmodel's signature."""
    X, y = data
    cols = X.iloc[:, :3].copy()
    cols["count"] = np.arange(len(cols), dtype=np.int64)
    registry.use_tracking_uri(uri)
    exp = registry.get_client(uri).get_experiment_by_name("safe_load").experiment_id
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Doubler(),
            signature=infer_signature(cols, cols * 2.0),
            pip_requirements=["pandas"],
        )
    version = str(mlflow.register_model(info.model_uri, "foreign").version)
    client = registry.get_client(uri)
    got = registry.version_info(client, "foreign", version)
    assert got.has_signature and got.feature_names == list(cols.columns)
    assert got.input_schema[-1] == {"name": "count", "type": "long"}
    assert got.task == "other"  # a custom pyfunc, several outputs
    assert got.to_dict()["input_schema"] == got.input_schema
    registry.set_version_tag(client, "foreign", version, "mlops.task", "regression")
    assert registry.version_info(client, "foreign", version).task == "regression"


def _tensor(dtype: str, *shape: int) -> list[dict]:
    return [{"name": None, "type": "tensor", "dtype": dtype, "shape": list(shape)}]


def _cols(*types: str) -> list[dict]:
    return [{"name": f"c{i}", "type": t} for i, t in enumerate(types)]


@pytest.mark.parametrize(
    ("flavors", "outputs", "tags", "task"),
    [
        (["sklearn"], _tensor("float64", -1), {}, "regression"),
        (["sklearn"], _tensor("int64", -1), {}, "classification"),
        (["sklearn"], _tensor("object", -1, 1), {}, "classification"),
        (["lightgbm"], _cols("string"), {}, "classification"),
        (["xgboost"], _cols("double"), {}, "regression"),
        (["sklearn"], _tensor("float64", -1, 3), {}, "other"),
        (["sklearn"], _cols("double", "double"), {}, "other"),
        (["sklearn"], [], {"classes": "[0, 1]"}, "classification"),
        (["python_function"], _cols("double"), {}, "other"),
        (["sklearn"], _cols("long"), {"task": "regression"}, "regression"),
        (["sklearn"], [], {"task": "regression", "mlops.task": "classification"}, "classification"),
        (["sklearn"], _cols("double"), {"mlops.task": "nonsense"}, "regression"),
    ],
)
def test_task_inference_rule(flavors, outputs, tags, task):
    assert registry.infer_task(tags, flavors, outputs) == task
