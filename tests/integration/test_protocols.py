"""The protocols other tools speak, against the real app: a real Open Inference Protocol client
(`tritonclient.http`, as KServe and Triton users have it), MLflow's own scoring-server client,
CSV and parquet bodies on /invocations, and the OpenAPI document's examples. Every answer is
compared with /predict's on the same rows."""

import io
import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from configs import RolloutConfig
from tests.conftest import ADMIN_TOKEN, copy_version, reset_champion

pytestmark = pytest.mark.ray
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
APP = "raymlops-protocols"


@pytest.fixture(scope="module")
def url(module_app, trained, mlflow_uri, training_config):
    """One app for the module; the last test starts a rollout on it (held at its first step:
    no analysis before 10**9 requests)."""
    reset_champion(mlflow_uri, training_config.model_name, trained.version)
    return module_app(name=APP, rollout=RolloutConfig(min_requests=10**9, min_step_seconds=1))


def predict(client, url, rows: pd.DataFrame) -> dict:
    r = client.post(f"{url}/predict", json={"features": rows.values.tolist()})
    assert r.status_code == 200, r.text
    return r.json()


def test_tritonclient_reads_metadata_and_infers_what_predict_answers(
    url, champion, training_config, data, client
):
    import tritonclient.http as triton

    X, _ = data
    name = training_config.model_name
    rows = X.iloc[:20]
    expected = predict(client, url, rows)
    oip = triton.InferenceServerClient(url=url.removeprefix("http://"))
    try:
        assert oip.is_server_live() and oip.is_server_ready()
        meta = oip.get_server_metadata()
        assert meta["name"] == "raymlops" and meta["extensions"] == []
        assert oip.is_model_ready(name) and oip.is_model_ready(name, champion)
        model = oip.get_model_metadata(name)
        assert model["name"] == name and model["versions"] == [champion]
        assert [t["name"] for t in model["inputs"]] == list(X.columns)
        assert {t["datatype"] for t in model["inputs"]} == {"FP64"}
        assert [(t["name"], t["shape"]) for t in model["outputs"]] == [
            ("predictions", [-1]),
            ("probabilities", [-1, 2]),
        ]

        # One FP64 [n, 30] tensor: binary (the client's default) and JSON data.
        for binary in (True, False):
            tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
            tensor.set_data_from_numpy(rows.to_numpy(np.float64), binary_data=binary)
            outputs = [
                triton.InferRequestedOutput("predictions", binary_data=binary),
                triton.InferRequestedOutput("probabilities", binary_data=binary),
            ]
            result = oip.infer(name, [tensor], outputs=outputs, request_id="req-1")
            assert result.as_numpy("predictions").tolist() == expected["predictions"]
            np.testing.assert_allclose(
                result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-9
            )
            answer = result.get_response()
            assert answer["model_version"] == champion and answer["id"] == "req-1"

        # One tensor per column, FP32 (as a client holding float32 data sends), pinned.
        columns = []
        for c in X.columns:
            t = triton.InferInput(c, [len(rows)], "FP32")
            t.set_data_from_numpy(rows[c].to_numpy(np.float32), binary_data=False)
            columns.append(t)
        result = oip.infer(name, columns, model_version=champion)
        as32 = predict(client, url, rows.astype(np.float32).astype(np.float64))
        assert result.as_numpy("predictions").tolist() == as32["predictions"]

        with pytest.raises(triton.InferenceServerException) as err:
            oip.infer("no_such_model", columns)
        assert err.value.status() == "404" and "no_such_model" in err.value.message()
        with pytest.raises(triton.InferenceServerException) as err:
            oip.infer(name, columns, model_version="999")
        assert err.value.status() == "404" and "not live" in err.value.message()
        assert not oip.is_model_ready("no_such_model")
    finally:
        oip.close()


def test_mlflow_scoring_client_ping_version_csv_and_parquet(url, data, client):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    X, _ = data
    rows = X.iloc[:15]
    expected = predict(client, url, rows)["predictions"]
    host, port = url.removeprefix("http://").split(":")
    scoring = ScoringServerClient(host, int(port))
    scoring.wait_server_ready(timeout=30)
    assert scoring.get_version() == mlflow.__version__
    assert scoring.invoke(rows)["predictions"] == expected

    r = client.get(f"{url}/ping")
    assert r.status_code == 200 and r.content == b""
    for content_type, body in (
        ("text/csv", rows.to_csv(index=False).encode()),
        ("text/csv; charset=utf-8", rows.to_csv(index=False).encode()),
        ("application/vnd.apache.parquet", rows.to_parquet()),
    ):
        r = client.post(f"{url}/invocations", content=body, headers={"content-type": content_type})
        assert r.status_code == 200, (content_type, r.text)
        assert r.json() == {"predictions": expected}

    # Errors in the scoring server's shape, 415 naming the types it takes.
    r = client.post(f"{url}/invocations", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415, r.text
    body = r.json()
    assert body["error_code"] == "BAD_REQUEST" and "text/csv" in body["message"]
    csv = io.StringIO()
    rows.drop(columns=X.columns[0]).to_csv(csv, index=False)
    r = client.post(
        f"{url}/invocations", content=csv.getvalue(), headers={"content-type": "text/csv"}
    )
    assert r.status_code == 422 and X.columns[0] in r.json()["message"], r.text
    r = client.post(
        f"{url}/invocations",
        content=b"not parquet",
        headers={"content-type": "application/vnd.apache.parquet"},
    )
    assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST", r.text
    # The server still answers after the bad bodies.
    assert scoring.invoke(rows.iloc[:2])["predictions"] == expected[:2]


def test_bad_oip_bodies_are_4xx_with_an_error_field(url, training_config, data, client):
    X, _ = data
    n, k = 3, X.shape[1]
    infer = f"{url}/v2/models/{training_config.model_name}/infer"
    good = X.iloc[:n].to_numpy().ravel().tolist()

    def tensor(shape, data, datatype="FP64", name="input-0"):
        return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}

    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b'{"inputs": [' * 40 + b"]}" * 40, 400, "deeper than"),
        (tensor([n, k - 1], good[: n * (k - 1)]), 400, f"[n, {k}]"),
        (tensor([n, k], good[:-1]), 400, "declares shape"),
        (tensor([n, k], good, "FP128"), 400, "datatype"),
        (tensor([n, k], ["a"] * (n * k), "BYTES"), 400, "numeric tensor"),
        (tensor([n, k], [True] * (n * k), "FP64"), 400, "datatype FP64 but data holds booleans"),
        (tensor([n, k], [1e39] + good[1:]), 400, "magnitude at most"),
        (tensor([2000, k], [0.0] * (2000 * k)), 413, "maximum of 1024 rows"),
        (
            {"inputs": [{"name": X.columns[0], "shape": [1], "datatype": "FP64", "data": [1]}]},
            400,
            "missing",
        ),
        ({**tensor([n, k], good), "outputs": [{"name": "logits"}]}, 400, "unknown outputs"),
    ]
    for body, status, fragment in cases:
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = client.post(infer, **kwargs)
        assert r.status_code == status, (fragment, r.text)
        assert fragment in r.json()["error"], r.text
    r = client.post(infer, content=b'{"inputs": [NaN]}')
    assert r.status_code == 400 and "error" in r.json()
    r = client.post(f"{url}/v2/models/other/infer", json=tensor([n, k], good))
    assert r.status_code == 404 and "other" in r.json()["error"]
    r = client.get(f"{url}/v2/models/other")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get(f"{url}/v2/models/{training_config.model_name}/versions/999/ready")
    assert r.status_code == 404 and "not live" in r.json()["error"]
    # Too large a body: the router's byte limit, before parsing.
    r = client.post(infer, content=b" " * (9 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    r = client.post(infer, json=tensor([n, k], good))
    assert r.status_code == 200 and len(r.json()["outputs"][0]["data"]) == n


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def test_binary_bodies_npy_and_oip_tensors_and_their_4xx(url, training_config, data, client):
    """The binary forms for large batches: a .npy body on /predict and the OIP binary tensor
    extension on /v2, each answering what JSON answers, and their broken forms a 4xx."""
    X, _ = data
    rows = X.iloc[:256].to_numpy(np.float64)
    n, k = rows.shape
    expected = predict(client, url, X.iloc[:256])
    NPY = {"content-type": "application/x-npy"}

    r = client.post(f"{url}/predict", content=npy(rows), headers=NPY)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected["predictions"]
    np.testing.assert_allclose(r.json()["probabilities"], expected["probabilities"], rtol=1e-9)
    # One row as a 1-D array, Fortran order, float32 and int data: the same rows.
    r = client.post(f"{url}/predict", content=npy(rows[0]), headers=NPY)
    assert r.json()["predictions"] == expected["predictions"][:1], r.text
    r = client.post(f"{url}/predict", content=npy(np.asfortranarray(rows[:5])), headers=NPY)
    assert r.json()["predictions"] == expected["predictions"][:5], r.text
    r = client.post(f"{url}/predict", content=npy(rows[:5].astype(np.float32)), headers=NPY)
    assert r.status_code == 200, r.text

    good = npy(rows[:3])
    npy_cases = [
        (b"", 400, "not a readable .npy"),
        (b"\x93NUMPY" + b"\x00" * 50, 400, "not a readable .npy"),
        (good[:-8], 400, "bytes follow it"),
        (npy(np.array([["a"] * k])), 422, "not a little-endian number"),
        (npy(rows[:3].astype(">f8")), 422, "not a little-endian number"),
        (npy(np.ones((3, k), dtype=bool)), 422, "not a little-endian number"),
        (npy(rows[:3].reshape(3, k, 1)), 422, "not 1-D or 2-D"),
        (npy(rows[:3, :-1]), 422, f"expects {k} features"),
        (npy(np.zeros((0, k))), 422, "empty batch"),
        (npy(np.full((2, k), np.nan)), 422, "NaN and infinity are refused"),
        (npy(np.full((2, k), 1e39)), 422, "magnitude at most"),
        (npy(np.zeros((2000, k))), 413, "maximum of 1024 rows"),
        # Headers that claim far more data than follows: refused before any allocation.
        (npy_header((10**12,)) + rows[0].tobytes(), 400, "bytes follow it"),
        (npy_header((10**12, k)) + rows[0].tobytes(), 413, "maximum of 1024 rows"),
        (npy_header((1000, 10**12)) + rows[0].tobytes(), 400, "bytes follow it"),
    ]
    for body, status, fragment in npy_cases:
        r = client.post(f"{url}/predict", content=body, headers=NPY)
        assert r.status_code == status, (fragment, r.text)
        assert fragment in r.json()["detail"], r.text
    # Pinned through the header: an unknown version is a 404 as for JSON.
    r = client.post(f"{url}/predict", content=good, headers={**NPY, "x-model-version": "999"})
    assert r.status_code == 404 and "not live" in r.json()["detail"], r.text

    # OIP binary tensor data (Inference-Header-Content-Length), by hand.
    infer = f"{url}/v2/models/{training_config.model_name}/infer"

    def binary(shape, data: bytes, size=None, datatype="FP64"):
        head = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(data) if size is None else size},
                }
            ]
        }
        header = json.dumps(head).encode()
        return header + data, {
            "inference-header-content-length": str(len(header)),
            "content-type": "application/octet-stream",
        }

    body, headers = binary([n, k], rows.tobytes())
    r = client.post(infer, content=body, headers=headers)
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert out["predictions"] == expected["predictions"]
    raw = rows[:3].tobytes()
    oip_cases = [
        (binary([3, k], raw[:-8]), "declares shape"),
        (binary([3, k], raw, size=len(raw) + 8), "does not fit"),
        (binary([3, k], raw + b"\x00" * 8, size=len(raw)), "belong to no input"),
        (binary([3, k], raw[:-3]), "whole number of FP64"),
        (binary([3, k], np.full(3 * k, np.inf).tobytes()), "magnitude at most"),
        ((body, {**headers, "inference-header-content-length": "999999999"}), "not a byte count"),
        ((body, {**headers, "inference-header-content-length": "-1"}), "not a byte count"),
    ]
    for (payload, hdrs), fragment in oip_cases:
        r = client.post(infer, content=payload, headers=hdrs)
        assert r.status_code == 400, (fragment, r.text)
        assert fragment in r.json()["error"], r.text


def test_server_timing_names_where_a_request_spent_its_time(url, data, client):
    X, _ = data
    body = {"features": X.iloc[:1].values.tolist()}
    r = client.post(f"{url}/predict", json=body)
    assert r.status_code == 200 and "server-timing" not in r.headers
    r = client.post(f"{url}/predict", json=body, headers={"x-mlops-timing": "1"})
    assert r.status_code == 200, r.text
    stages = {}
    for item in r.headers["server-timing"].split(","):
        name, dur = item.strip().split(";dur=")
        stages[name] = float(dur)
    assert list(stages) == [
        "asgi", "read", "parse", "route", "validate", "queue", "call",
        "batch", "model", "replica", "resume", "record", "encode", "router",
    ]  # fmt: skip
    assert all(v >= 0 for v in stages.values()), stages
    # The replica's time is part of the call's; the call is part of the whole.
    assert stages["model"] <= stages["replica"] <= stages["call"] <= stages["router"], stages
    assert stages["router"] <= r.json()["latency_ms"] + stages["asgi"] + stages["encode"] + 1
    # Nothing of the timing leaks into the answer.
    assert set(r.json()) == {
        "predictions", "probabilities", "model_version", "model_name", "request_id", "latency_ms",
    }  # fmt: skip


def test_openapi_examples_fit_the_served_model_and_work(url, training_config, data, client):
    X, _ = data
    doc = client.get(f"{url}/openapi.json").json()
    paths = doc["paths"]
    body = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert len(body["features"][0]) == X.shape[1]
    assert client.post(f"{url}/predict", json=body).status_code == 200
    inv = paths["/invocations"]["post"]["requestBody"]["content"]
    assert inv["application/json"]["example"]["dataframe_split"]["columns"] == list(X.columns)
    r = client.post(f"{url}/invocations", json=inv["application/json"]["example"])
    assert r.status_code == 200, r.text
    r = client.post(
        f"{url}/invocations",
        content=inv["text/csv"]["example"],
        headers={"content-type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    op = paths["/v2/models/{name}/infer"]["post"]
    assert op["parameters"][0]["example"] == training_config.model_name
    example = op["requestBody"]["content"]["application/json"]["example"]
    r = client.post(f"{url}/v2/models/{training_config.model_name}/infer", json=example)
    assert r.status_code == 200, r.text

    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "admin routes: the admin token; /feedback: the feedback token",
    }
    for path in ("/admin/weights", "/reload", "/feedback"):
        op = paths[path]["post"]
        assert op["security"] == [{"bearer": []}]
        assert {"401", "403", "413", "422", "503"} <= set(op["responses"])
    assert {"400", "404", "413", "422", "503"} <= set(paths["/predict"]["post"]["responses"])
    assert "415" in paths["/invocations"]["post"]["responses"]
    for page in ("/docs", "/redoc"):
        r = client.get(f"{url}{page}")
        assert r.status_code == 200 and "/openapi.json" in r.text, (page, r.text[:200])


def test_unversioned_infer_follows_the_split_and_a_versioned_one_pins(
    url, champion, mlflow_uri, training_config, data, client
):
    X, _ = data
    name = training_config.model_name
    v2 = copy_version(mlflow_uri, name, champion)
    r = client.post(f"{url}/admin/rollout", json={"version": v2}, headers=ADMIN, timeout=120)
    assert r.status_code == 200, r.text
    slots = client.get(f"{url}/admin/rollout", headers=ADMIN).json()["slots"]
    slot_of = {v: s for s, v in slots.items() if v}
    r = client.post(
        f"{url}/admin/weights", json={slot_of[champion]: 0.0, slot_of[v2]: 1.0}, headers=ADMIN
    )
    assert r.status_code == 200, r.text

    row = X.iloc[:1].to_numpy().ravel().tolist()
    body = {"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    infer = f"{url}/v2/models/{name}"
    for _ in range(5):
        assert client.post(f"{infer}/infer", json=body).json()["model_version"] == v2
        r = client.post(f"{infer}/versions/{champion}/infer", json=body)
        assert r.status_code == 200 and r.json()["model_version"] == champion, r.text
    assert sorted(client.get(infer).json()["versions"]) == sorted([champion, v2])

    # Half and half: a routing key keeps a client on one version, like /predict's.
    r = client.post(
        f"{url}/admin/weights", json={slot_of[champion]: 0.5, slot_of[v2]: 0.5}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    for key in ("alice", "bob", "carol"):
        headers = {"X-Routing-Key": key}
        seen = {
            client.post(f"{infer}/infer", json=body, headers=headers).json()["model_version"]
            for _ in range(6)
        }
        by_predict = client.post(
            f"{url}/predict", json={"features": [row], "routing_key": key}
        ).json()["model_version"]
        assert seen == {by_predict}, key
