"""Models a team registered with its own code serve (issue 13): no tag of ours, a signature.

Each model is registered in the session's MLflow under a name of its own, made champion, and
served by the app as `serve_app` deploys it; the answers must equal what
`mlflow.pyfunc.load_model(uri).predict` answers on the same rows. The model servers of these
apps allow the lightgbm and python_function flavors (and the Ridge estimator) through their
own environment, as an operator would set ``MLOPS_MODEL_LOADING__*``; the session's other apps
keep the default policy.
"""

from __future__ import annotations

import sys

import cloudpickle
import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from ray import serve

from tests.conftest import ADMIN_TOKEN, trust_in_model_servers
from tests.helpers import wait_until
from training import registry
from training.data import load_dataset

pytestmark = pytest.mark.ray

APP = "foreign-models"
LOADING_ENV = {
    "MLOPS_MODEL_LOADING__ALLOWED_FLAVORS": "[sklearn, lightgbm, python_function]",
    "MLOPS_MODEL_LOADING__ALLOWED_ESTIMATORS": (
        "[sklearn.linear_model._ridge.Ridge, "
        "sklearn.compose._column_transformer.ColumnTransformer, "
        "sklearn.linear_model._logistic.LogisticRegression]"
    ),
}


class TeamScorer(mlflow.pyfunc.PythonModel):
    """A custom model answering a DataFrame of two columns (a score and a label)."""

    def predict(self, context, model_input, params=None):
        score = model_input["a"] * 2.0 - model_input["b"] + model_input["n"]
        return pd.DataFrame({"score": score, "label": np.where(score > 0, "up", "down")})


class BrokenOnLoad(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("the weights file is corrupt")

    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture
def trusting_servers(monkeypatch):
    """The app's ModelServer deployments get LOADING_ENV in their processes' environment."""
    trust_in_model_servers(monkeypatch, LOADING_ENV)


@pytest.fixture
def client():
    with httpx.Client(timeout=60) as c:
        yield c


def register(mlflow_uri: str, name: str, log) -> str:
    """Log a model with ``log()`` in a run, register it as ``name``, make it champion."""
    registry.use_tracking_uri(mlflow_uri)
    client = registry.get_client(mlflow_uri)
    exp = registry.ensure_experiment(client, "foreign-models", mlflow_uri)
    with mlflow.start_run(experiment_id=exp):
        info = log()
    version = str(mlflow.register_model(info.model_uri, name).version)
    registry.set_alias(client, name, registry.CHAMPION, version)
    return version


def register_sklearn(mlflow_uri: str, name: str, model, X) -> str:
    """`register` for a scikit-learn estimator in skops, its signature inferred on ``X``."""
    return register(
        mlflow_uri,
        name,
        lambda: mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            signature=infer_signature(X, model.predict(X)),
            pip_requirements=["scikit-learn"],
        ),
    )


def deploy_ready(serve_app, client, name: str) -> str:
    url = serve_app(name=APP, model_name=name)
    wait_until(
        lambda: client.get(f"{url}/health").status_code == 200,
        timeout=120,
        what=f"{name} ready",
        context=lambda: client.get(f"{url}/health").text,
    )
    return url


def predict_every_way(client, url: str, name: str, rows: pd.DataFrame) -> dict:
    """/predict (records), /invocations (dataframe_split) and /v2/models/{name}/infer (one
    tensor per column, BYTES for a string column) must answer the same; returns /predict's
    body."""
    r = client.post(f"{url}/predict", json={"features": rows.to_dict(orient="records")})
    assert r.status_code == 200, r.text
    body = r.json()
    split = rows.to_dict(orient="split")
    inv = client.post(
        f"{url}/invocations",
        json={"dataframe_split": {"columns": split["columns"], "data": split["data"]}},
    )
    assert inv.status_code == 200, inv.text
    assert inv.json()["predictions"] == body["predictions"]
    inputs = [
        {
            "name": c,
            "shape": [len(rows)],
            "datatype": {"i": "INT64", "u": "INT64", "O": "BYTES"}.get(rows[c].dtype.kind, "FP64"),
            "data": rows[c].tolist(),
        }
        for c in rows.columns
    ]
    v2 = client.post(f"{url}/v2/models/{name}/infer", json={"inputs": inputs})
    assert v2.status_code == 200, v2.text
    tensors = {t["name"]: t for t in v2.json()["outputs"]}
    predictions = body["predictions"]
    if predictions and isinstance(predictions[0], dict):  # a DataFrame: a tensor per column
        for c in predictions[0]:
            assert tensors[c]["data"] == [p[c] for p in predictions], (c, tensors[c])
    else:
        assert tensors["predictions"]["data"] == predictions, tensors
    if "probabilities" in body:
        got = np.asarray(tensors["probabilities"]["data"]).reshape(
            tensors["probabilities"]["shape"]
        )
        np.testing.assert_allclose(got, body["probabilities"], rtol=1e-12)
    return body


def test_sklearn_regressor_serves_numbers(
    serve_app, trusting_servers, ray_cluster, mlflow_uri, client
):
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = Ridge(alpha=0.5).fit(X, y)
    name = "team_diabetes_ridge"
    version = register_sklearn(mlflow_uri, name, model, X)
    url = deploy_ready(serve_app, client, name)
    rows = X.iloc[:20]
    body = predict_every_way(client, url, name, rows)
    want = mlflow.pyfunc.load_model(registry.model_uri(name, version)).predict(rows)
    np.testing.assert_allclose(body["predictions"], want, rtol=1e-9)
    assert "probabilities" not in body and body["model_version"] == version
    info = client.get(f"{url}/model-info").json()["versions"][version]
    assert info["task"] == "regression" and info["feature_names"] == list(X.columns)

    # A column the signature lacks: the client's error, naming what was expected.
    bad = rows.iloc[:2].assign(not_a_feature=1.0).to_dict(orient="records")
    r = client.post(f"{url}/predict", json={"features": bad})
    assert 400 <= r.status_code < 500 and "not_a_feature" in r.text, r.text


def test_lightgbm_classifier_serves_labels_and_probabilities(
    serve_app, trusting_servers, ray_cluster, mlflow_uri, client
):
    import lightgbm

    X, y = load_dataset("breast_cancer")
    model = lightgbm.LGBMClassifier(n_estimators=25, verbose=-1).fit(X, y)
    name = "team_lgbm_classifier"
    version = register(
        mlflow_uri,
        name,
        lambda: mlflow.lightgbm.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            pip_requirements=["lightgbm"],
        ),
    )
    url = deploy_ready(serve_app, client, name)
    rows = X.iloc[:30]
    body = predict_every_way(client, url, name, rows)
    want = mlflow.pyfunc.load_model(registry.model_uri(name, version)).predict(rows)
    assert body["predictions"] == want.tolist()
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(rows), rtol=1e-9)
    info = client.get(f"{url}/model-info").json()["versions"][version]
    assert info["task"] == "classification" and info["has_signature"] is True


def test_custom_pyfunc_serves_its_dataframe(
    serve_app, trusting_servers, ray_cluster, mlflow_uri, client
):
    # The replicas cannot import this test module: the class travels inside the pickle.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=40),
            "b": rng.normal(size=40),
            "n": rng.integers(0, 4, 40).astype(np.int64),
        }
    )
    model = TeamScorer()
    name = "team_custom_scorer"
    version = register(
        mlflow_uri,
        name,
        lambda: mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(frame, model.predict(None, frame)),
            pip_requirements=["pandas"],
        ),
    )
    url = deploy_ready(serve_app, client, name)
    rows = frame.iloc[:15]
    body = predict_every_way(client, url, name, rows)
    want = mlflow.pyfunc.load_model(registry.model_uri(name, version)).predict(rows)
    assert body["predictions"] == want.to_dict(orient="records")
    assert "probabilities" not in body
    info = client.get(f"{url}/model-info").json()["versions"][version]
    assert info["task"] == "other"
    assert {"name": "n", "type": "long"} in info["input_schema"]
    # A fraction in the long column is the client's mistake: 422 naming the cell, on every
    # protocol, and the model never sees it.
    bad = rows.iloc[:2].astype({"n": float}).assign(n=[1.0, 2.5]).to_dict(orient="records")
    r = client.post(f"{url}/predict", json={"features": bad})
    assert r.status_code == 422, r.text
    assert "row 1, column 'n': 2.5 is not a whole number" in r.json()["detail"], r.text
    r = client.post(f"{url}/invocations", json={"dataframe_records": bad})
    assert r.status_code == 422 and "column 'n'" in r.json()["message"], r.text


def test_sklearn_pipeline_with_a_string_column_serves_on_every_protocol(
    serve_app, trusting_servers, ray_cluster, mlflow_uri, client
):
    """A OneHotEncoder on a categorical "color" column, numeric columns passed through: the
    signature (from a DataFrame) has a string column, and every route takes it as text."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=200),
            "color": rng.choice(["red", "green", "blue"], 200),
            "k": rng.integers(0, 5, 200).astype(np.int64),
        }
    )
    y = np.where((frame["color"] == "red") ^ (frame["x"] > 0), "yes", "no")
    encode = ColumnTransformer(
        [("oh", OneHotEncoder(handle_unknown="ignore"), ["color"])], remainder="passthrough"
    )
    model = Pipeline([("pre", encode), ("clf", LogisticRegression())]).fit(frame, y)
    name = "team_color_pipeline"
    version = register_sklearn(mlflow_uri, name, model, frame)
    url = deploy_ready(serve_app, client, name)
    rows = frame.iloc[:25]
    body = predict_every_way(client, url, name, rows)
    want = mlflow.pyfunc.load_model(registry.model_uri(name, version)).predict(rows)
    assert body["predictions"] == want.tolist() and set(want) == {"yes", "no"}
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(rows), rtol=1e-9)
    # Rows as lists in feature order, and CSV, answer the same.
    r = client.post(f"{url}/predict", json={"features": rows.to_numpy().tolist()})
    assert r.status_code == 200 and r.json()["predictions"] == body["predictions"], r.text
    csv = client.post(
        f"{url}/invocations",
        content=rows.to_csv(index=False),
        headers={"Content-Type": "text/csv"},
    )
    assert csv.status_code == 200 and csv.json()["predictions"] == body["predictions"], csv.text
    # A number in the string column: 422 naming the row, the column and "string".
    bad = rows.iloc[:2].to_dict(orient="records")
    bad[1]["color"] = 7
    r = client.post(f"{url}/predict", json={"features": bad})
    assert r.status_code == 422, r.text
    assert "row 1, column 'color': 7 is not a string" in r.json()["detail"], r.text
    r = client.post(f"{url}/invocations", json={"dataframe_records": bad})
    assert r.status_code == 422 and "column 'color'" in r.json()["message"], r.text
    # The OpenAPI example gives the string column a string; the metadata calls it BYTES.
    doc = client.get(f"{url}/openapi.json").json()
    example = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert example["example"]["features"][0][1] == "a", example
    meta = client.get(f"{url}/v2/models/{name}").json()
    assert {"name": "color", "datatype": "BYTES", "shape": [-1]} in meta["inputs"], meta

    # The drift monitor takes every row (none dropped as invalid) and leaves "color" out of
    # the per-feature scores.
    def monitored():
        status = client.get(f"{url}/monitor/status").json()
        seen = status["versions"].get(version, {}).get("rows_seen", 0)
        return status if seen >= 3 * len(rows) + len(rows) else None

    status = wait_until(monitored, timeout=60, what="rows reach the monitor")
    assert status["records"]["invalid"] == 0, status["records"]
    assert "color" not in status["features"]


REFUSALS = [
    ("no_signature", "has no signature: log it with signature=mlflow.models.infer_signature"),
    ("load_raises", "the weights file is corrupt"),
]


def deploy_refused(serve_app, mlflow_uri: str, kind: str) -> tuple[str, str, pd.DataFrame]:
    """Register a model of ``kind`` (see REFUSALS) as champion and deploy the app on it."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    frame = pd.DataFrame({"a": [0.1, 0.2], "b": [1.0, 2.0], "n": [1, 2]})
    name = f"team_refused_{kind}"
    python_model = TeamScorer() if kind == "no_signature" else BrokenOnLoad()
    signature = None if kind == "no_signature" else infer_signature(frame, frame)
    version = register(
        mlflow_uri,
        name,
        lambda: mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            signature=signature,
            pip_requirements=["pandas"],
        ),
    )
    url = serve_app(name=APP, model_name=name, slot_ready_timeout_s=5.0)
    return url, version, frame


def replica_refusals() -> dict[str, str]:
    """What the app's model server replicas refused to load: version -> why."""
    out: dict[str, str] = {}
    for slot in ("blue", "green"):
        handle = serve.get_deployment_handle(slot, app_name=APP)
        out.update(handle.load_errors.remote().result(timeout_s=30))
    return out


@pytest.mark.parametrize(("kind", "why"), REFUSALS, ids=[k for k, _ in REFUSALS])
def test_a_model_that_cannot_load_is_refused_at_load_and_every_route_says_why(
    kind, why, serve_app, trusting_servers, ray_cluster, mlflow_uri, client
):
    url, version, frame = deploy_refused(serve_app, mlflow_uri, kind)
    # Refused once, at load, by the replica, with the reason and the model's URI...
    errors = wait_until(replica_refusals, timeout=60, what=f"v{version} refused")
    assert why in errors[version], errors
    assert errors[version].startswith(f"models:/team_refused_{kind}/{version}: ")
    # ...and the replica stays up (it keeps following the controller): /health, the
    # prediction routes and the rollout status say why, with a 503.
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def health_says_refused():
        r = client.get(f"{url}/health", headers=admin)
        return r if r.status_code == 503 and r.json().get("load_errors") else None

    health = wait_until(health_says_refused, timeout=30, what="/health reports the refusal")
    body = health.json()
    assert body["ready"] is False and version in body["load_errors"], body
    assert why in body["load_errors"][version]["reason"] and why in body["detail"], body
    # Without the token: our own refusal (what to do) is shown; a loader's exception is not.
    public = client.get(f"{url}/health")
    assert public.status_code == 503, public.text
    if kind == "load_raises":
        assert why not in public.text and "loader raised" in public.text, public.text
    else:
        assert why in public.text, public.text
    for route, payload in (
        ("/predict", {"features": frame.to_dict(orient="records")}),
        ("/invocations", {"dataframe_records": frame.to_dict("records")}),
    ):
        r = client.post(f"{url}{route}", json=payload)
        assert r.status_code == 503, (route, r.text)
        assert f"v{version}" in r.text and "refused at load" in r.text, (route, r.text)
    assert client.get(f"{url}/ping").status_code == 503
    # The rollout status (admin) names it too.
    status = client.get(f"{url}/admin/rollout", headers=admin).json()
    assert why in status["load_errors"][version]["reason"], status
