"""The Serve graph over real HTTP: predictions, MLflow scoring protocol, bad input, reload."""

import threading

import httpx
import mlflow
import numpy as np
import pytest
from ray import serve

from tests import faults
from tests.conftest import ADMIN_TOKEN, reset_champion
from tests.helpers import wait_until
from training import registry

pytestmark = pytest.mark.ray
APP = "raymlops-test"  # serve_app's default name: a test's own app replaces the shared one


@pytest.fixture(scope="module")
def url(module_app, trained, mlflow_uri, training_config):
    """One app with the trained champion for the tests that only read from it; they come
    first in this module, before the tests that deploy an app of their own."""
    reset_champion(mlflow_uri, training_config.model_name, trained.version)
    return module_app(name=APP)


def test_predict_and_invocations_return_the_models_own_predictions(
    url, trained, mlflow_uri, training_config, data, client
):
    X, _ = data
    model = registry.load_model(mlflow_uri, training_config.model_name, trained.version)
    rows = X.iloc[:25]
    expected = model.predict(rows).tolist()
    expected_proba = model.predict_proba(rows)

    r = client.post(f"{url}/predict", json={"features": rows.values.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == expected
    np.testing.assert_allclose(body["probabilities"], expected_proba, rtol=1e-9)
    assert body["model_version"] == trained.version
    assert body["model_name"] == training_config.model_name
    assert len(body["request_id"]) == 32 and body["latency_ms"] > 0

    r = client.post(f"{url}/predict", json={"features": rows.iloc[:3].to_dict(orient="records")})
    assert r.json()["predictions"] == expected[:3]
    r = client.post(f"{url}/predict", json={"features": rows.iloc[0].tolist()})
    assert r.json()["predictions"] == expected[:1]

    split = rows.to_dict(orient="split")
    for payload in (
        {"dataframe_split": {"columns": split["columns"], "data": split["data"]}},
        {"dataframe_records": rows.to_dict(orient="records")},
        {"instances": rows.values.tolist()},
        {"inputs": {c: rows[c].tolist() for c in rows.columns}},
    ):
        r = client.post(f"{url}/invocations", json=payload)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": expected}

    health = client.get(f"{url}/health")
    assert health.status_code == 200 and health.json()["ready"] is True
    info = client.get(f"{url}/model-info").json()
    assert info["champion"] == trained.version
    assert info["versions"][trained.version]["metrics"]["test_accuracy"] == pytest.approx(
        trained.test_accuracy
    )
    assert client.get(f"{url}/docs").status_code == 200
    assert "/predict" in client.get(f"{url}/openapi.json").json()["paths"]


def test_bad_input_gets_4xx_and_the_replica_keeps_serving(url, trained, data, client):
    X, _ = data
    n = X.shape[1]
    good = X.iloc[0].tolist()
    cases = [
        (b"this is not json", 400, "not valid JSON"),
        (b"", 400, "empty request body"),
        (b'{"features": []}', 422, "empty batch"),
        (b'{"features": [[1, 2, 3]]}', 422, f"expects {n} features"),
        (b'{"features": [[' + b"NaN," * (n - 1) + b"1]]}", 422, "not a finite number"),
        (b'{"features": [[' + b"Infinity," * (n - 1) + b"1]]}", 422, "not a finite number"),
        (('{"features": [["x"' + ",1" * (n - 1) + "]]}").encode(), 422, "'x' is not a number"),
        (b'{"features": [{"wrong_name": 1}]}', 422, "feature names do not match"),
        (b'{"rows": []}', 422, "missing field 'features'"),
        (
            httpx.Request("POST", "/", json={"features": [good] * 1025}).content,
            413,
            "maximum of 1024",
        ),
    ]
    for body, status, fragment in cases:
        r = client.post(
            f"{url}/predict", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == status, (body[:60], r.text)
        assert fragment in r.json()["detail"], r.text
    r = client.post(f"{url}/invocations", json={"columns": [], "data": []})
    assert r.status_code == 422 and "exactly one of" in r.json()["detail"]
    r = client.post(f"{url}/predict", json={"features": [good], "model_version": "999"})
    assert r.status_code == 404 and r.json()["live_versions"] == [trained.version]
    # Nothing above hurt the replicas: a good request still succeeds.
    assert client.post(f"{url}/predict", json={"features": [good]}).status_code == 200


def test_reload_requires_the_admin_token(url, trained, client):
    assert client.post(f"{url}/reload").status_code == 401
    assert client.post(f"{url}/reload", headers={"Authorization": "Bearer nope"}).status_code == 403
    r = client.post(f"{url}/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200 and r.json()["changed"] is False


def test_reload_moves_to_new_champion_without_failing_a_request(
    url, trained, mlflow_uri, training_config, data
):
    """On the module's app, after the tests that only read from it."""
    X, _ = data
    name = training_config.model_name
    client = registry.get_client(mlflow_uri)
    old = client.get_model_version(name, trained.version)
    # A second version: the same artifacts registered again (what model it is doesn't matter
    # here; which version answers does).
    registry.use_tracking_uri(mlflow_uri)
    new = mlflow.register_model(old.source, name, tags=old.tags)
    stop = threading.Event()
    results: list[tuple[int, str | None]] = []

    def stream():
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                r = c.post(f"{url}/predict", json={"features": [X.iloc[1].tolist()]})
                results.append((r.status_code, r.json().get("model_version")))

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(results) > 20, 30, what="traffic flowing")
        registry.set_alias(client, name, registry.CHAMPION, new.version)
        with httpx.Client(timeout=120) as c:
            r = c.post(f"{url}/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 200, r.text
        assert r.json()["changed"] is True and r.json()["champion"] == str(new.version)
        n_at_reload = len(results)
        wait_until(lambda: len(results) > n_at_reload + 20, 30, what="traffic after reload")
    finally:
        stop.set()
        for t in threads:
            t.join()
        registry.set_alias(client, name, registry.CHAMPION, trained.version)
    statuses = [s for s, _ in results]
    assert statuses.count(200) == len(statuses), f"failures: {[s for s in statuses if s != 200]}"
    versions = [v for _, v in results]
    assert versions[0] == trained.version and versions[-1] == str(new.version)
    # Once cut over, traffic never goes back to the old version.
    first_new = versions.index(str(new.version))
    assert set(versions[first_new:]) == {str(new.version)}
    health = httpx.get(f"{url}/health").json()
    assert health["champion"] == str(new.version)
    assert serve.status().applications["raymlops-test"].status == "RUNNING"


def test_without_a_registered_model_predict_is_503_and_not_ready(serve_app, client):
    url = serve_app(model_name="no_such_model")
    r = client.post(f"{url}/predict", json={"features": [[1.0]]})
    assert r.status_code == 503
    assert "no version of 'no_such_model' has alias 'champion'" in r.json()["detail"]
    assert r.headers["retry-after"] == "1"
    health = client.get(f"{url}/health")
    assert health.status_code == 503 and health.json()["ready"] is False


def test_a_request_the_model_fails_on_fails_alone_under_concurrent_load(
    serve_app, trained, mlflow_uri, training_config, data
):
    """Concurrent requests are coalesced by the router and batched by the replica into one
    model pass; rows the model raises on must fail only their own request (500), not the
    requests they were merged with."""
    X, _ = data
    name = f"{training_config.model_name}_poison"
    base = registry.load_model(mlflow_uri, training_config.model_name, trained.version)
    version = faults.register(mlflow_uri, name, faults.PoisonRowModel(base), X)
    registry.set_alias(registry.get_client(mlflow_uri), name, registry.CHAMPION, version)
    url = serve_app(name="poison-test", model_name=name)
    expected = base.predict(X.iloc[:40]).tolist()
    poison = X.iloc[0].tolist()
    poison[0] = faults.PoisonRowModel.POISON
    results: list[tuple[int, int, dict]] = []

    def client_thread(offset: int):
        with httpx.Client(timeout=30) as c:
            for i in range(offset, 40, 8):
                bad = i % 4 == 0
                row = poison if bad else X.iloc[i].tolist()
                r = c.post(f"{url}/predict", json={"features": [row]})
                results.append((i, r.status_code, r.json()))

    for _ in range(3):
        threads = [threading.Thread(target=client_thread, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 120
    for i, status, body in results:
        if i % 4 == 0:
            assert status == 500, body
            assert "failed on this input" in body["detail"]
            # The model's exception text stays in the log, under the request id the body names.
            assert "poison" not in body["detail"] and "ValueError" not in body["detail"]
            assert len(body["request_id"]) == 32 and body["request_id"] in body["detail"]
        else:
            assert status == 200, body
            assert body["predictions"] == [expected[i]]
    assert serve.status().applications["poison-test"].status == "RUNNING"
