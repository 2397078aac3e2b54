"""Open Inference Protocol V2 parsing and encoding as plain functions, and the OpenAPI document
the router serves. No Ray cluster: the integration test (tests/integration/test_protocols.py)
runs a real OIP client against the app."""

import json

import numpy as np
import pytest

from deployments import oip
from deployments.router import document_openapi, fill_examples
from deployments.schemas import InputError

NAMES = ["mean radius", "mean texture", "mean area"]
ROWS = [[17.99, 10.38, 1001.0], [20.57, 17.77, 1326.0]]


def matrix_body(rows=ROWS, datatype="FP64", shape=None, name="input-0", nested=False):
    data = rows if nested else [v for r in rows for v in r]
    shape = shape or [len(rows), len(rows[0])]
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


def column_body(rows=ROWS, datatype="FP64", shape_of=lambda n: [n]):
    return {
        "inputs": [
            {
                "name": name,
                "shape": shape_of(len(rows)),
                "datatype": datatype,
                "data": [r[j] for r in rows],
            }
            for j, name in enumerate(NAMES)
        ]
    }


def parse(body, max_rows=100, **kw):
    return oip.parse_infer(body, NAMES, max_rows, **kw)


def bad(body, status=400, **kw) -> str:
    with pytest.raises(InputError) as err:
        parse(body, **kw)
    assert err.value.status == status, err.value.detail
    return err.value.detail


@pytest.mark.parametrize(
    "body",
    [
        matrix_body(),
        matrix_body(nested=True),
        matrix_body(datatype="FP32"),
        column_body(),
        column_body(shape_of=lambda n: [n, 1]),
        # columns in another order than the features: matched by name
        {"inputs": list(reversed(column_body()["inputs"]))},
    ],
)
def test_both_layouts_give_the_feature_matrix_in_feature_order(body):
    X = parse(body).X
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X, np.asarray(ROWS))


def test_integer_tensors_are_numbers_too():
    rows = [[1, 2, 3], [4, 5, 6]]
    for dt in ("INT64", "INT32", "INT8", "UINT16"):
        np.testing.assert_array_equal(parse(matrix_body(rows, datatype=dt)).X, rows)


def test_id_parameters_and_outputs_are_kept():
    body = {**matrix_body(), "id": "req-7", "parameters": {"x": 1}}
    body["outputs"] = [{"name": "probabilities"}]
    req = parse(body)
    assert (req.id, req.parameters, req.outputs) == ("req-7", {"x": 1}, ["probabilities"])


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"inputs": []}, "missing or empty 'inputs'"),
        ([1, 2], "expected a JSON object"),
        ({"inputs": [{"shape": [1, 3]}]}, "string 'name'"),
        (matrix_body(shape=[3, 2]), "does not fit the model"),
        (matrix_body(shape=[2, 3, 1]), "shape"),
        (matrix_body(shape=[-2, 3]), "non-negative integers"),
        (matrix_body(datatype="FP128"), "datatype 'FP128' is not one of"),
        (matrix_body(datatype="BOOL"), "datatype BOOL but data holds numbers"),
        (matrix_body(datatype="INT64"), "datatype INT64 but data holds numbers with a fraction"),
        (matrix_body([["a", "b", "c"], ["d", "e", "f"]], datatype="BYTES"), "numeric tensor"),
        (matrix_body([["a", "b", "c"], ["d", "e", "f"]]), "datatype FP64 but data holds strings"),
        (matrix_body([[True, False, True]] * 2, datatype="BOOL"), "numeric tensor"),
        (
            {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            "holds 3 values",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2], [3, 4, 5]]}
                ]
            },
            "ragged",
        ),
        ({"inputs": column_body()["inputs"][:2]}, "missing ['mean area']"),
        (
            {"inputs": [*column_body()["inputs"], {**column_body()["inputs"][0], "name": "z"}]},
            "unknown ['z']",
        ),
        (
            {"inputs": [*column_body()["inputs"], column_body()["inputs"][0]]},
            "named more than once",
        ),
        (column_body(shape_of=lambda n: [n, 2]), "a column tensor has shape [n] or [n, 1]"),
        ({**matrix_body(), "outputs": [{"name": "logits"}]}, "unknown outputs ['logits']"),
        ({**matrix_body(), "id": 5}, "id must be a string"),
        ({**matrix_body(), "parameters": [1]}, "parameters must be an object"),
        (matrix_body(shape=[0, 3], rows=[[1, 2, 3]]), "empty batch"),
    ],
)
def test_bad_tensors_are_400_saying_what_was_expected(body, fragment):
    assert fragment in bad(body)


def test_columns_of_different_lengths_are_400():
    body = column_body()
    body["inputs"][1] = {**body["inputs"][1], "shape": [1], "data": [1.0]}
    assert "1 rows, but the first column has 2" in bad(body)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e39])
def test_nan_infinity_and_values_past_float32_are_refused(value):
    rows = [[1.0, 2.0, 3.0], [4.0, value, 6.0]]
    detail = bad(matrix_body(rows))
    assert "index [1, 1]" in detail and "magnitude at most" in detail
    assert "mean texture" in bad(column_body(rows))


def test_magnitude_bound_is_the_routers_setting():
    rows = [[1.0, 2.0, 3.0]]
    assert "magnitude at most 2" in bad(matrix_body(rows), max_abs=2.0)


def test_too_many_rows_is_413_before_the_data_is_decoded():
    rows = [[1.0, 2.0, 3.0]] * 11
    assert "over the maximum of 10 rows" in bad(matrix_body(rows), 413, max_rows=10)
    assert "over the maximum of 10 rows" in bad(column_body(rows), 413, max_rows=10)
    huge = {"inputs": [{"name": "x", "shape": [10**12, 3], "datatype": "FP64", "data": [1]}]}
    assert bad(huge, 413, max_rows=10)


def binary_request(rows: np.ndarray, datatype="FP64", dtype="<f8") -> tuple[bytes, str]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(rows.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": rows.size * np.dtype(dtype).itemsize},
                }
            ]
        }
    ).encode()
    return header + rows.astype(dtype).tobytes(), str(len(header))


def test_binary_tensor_data_as_tritonclient_sends_it_by_default():
    rows = np.asarray(ROWS)
    for datatype, dtype in (("FP64", "<f8"), ("FP32", "<f4"), ("INT64", "<i8")):
        raw, length = binary_request(rows.round(), datatype, dtype)
        head, binary = oip.split_body(raw, length)
        X = oip.parse_infer(json.loads(head), NAMES, 10, binary=binary).X
        np.testing.assert_array_equal(X, rows.round())


def test_binary_data_that_does_not_add_up_is_400():
    raw, length = binary_request(np.asarray(ROWS))
    head, binary = oip.split_body(raw, length)
    with pytest.raises(InputError, match="does not fit"):
        oip.parse_infer(json.loads(head), NAMES, 10, binary=binary[:-8])
    with pytest.raises(InputError, match="belong to no input"):
        oip.parse_infer(json.loads(head), NAMES, 10, binary=binary + b"\0" * 8)
    for header in ("x", "0", str(len(raw) + 1)):
        with pytest.raises(InputError, match="Inference-Header-Content-Length"):
            oip.split_body(raw, header)


def test_outputs_are_typed_tensors():
    out = {
        "predictions": [0, 1],
        "probabilities": [[0.9, 0.1], [0.2, 0.8]],
        "model_version": "3",
    }
    req = parse({**matrix_body(), "id": "abc"})
    body = oip.infer_response("bc", out, req, "rid")
    assert body["model_name"] == "bc" and body["model_version"] == "3" and body["id"] == "abc"
    assert body["outputs"] == [
        {"name": "predictions", "datatype": "INT64", "shape": [2], "data": [0, 1]},
        {
            "name": "probabilities",
            "datatype": "FP64",
            "shape": [2, 2],
            "data": [0.9, 0.1, 0.2, 0.8],
        },
    ]
    # no id given: the router's request id (the one /feedback takes)
    assert oip.infer_response("bc", out, parse(matrix_body()), "rid")["id"] == "rid"
    wanted = parse({**matrix_body(), "outputs": [{"name": "predictions"}]})
    assert [t["name"] for t in oip.infer_response("bc", out, wanted, "r")["outputs"]] == [
        "predictions"
    ]


@pytest.mark.parametrize(
    "predictions,datatype,shape,data",
    [
        ([1.5, 2.25], "FP64", [2], [1.5, 2.25]),
        ([True, False], "BOOL", [2], [True, False]),
        (["cat", "dog"], "BYTES", [2], ["cat", "dog"]),
        ([[1.0, 2.0], [3.0, 4.0]], "FP64", [2, 2], [1.0, 2.0, 3.0, 4.0]),
    ],
)
def test_prediction_datatype_follows_the_values(predictions, datatype, shape, data):
    (tensor,) = oip.encode_outputs({"predictions": predictions})
    assert tensor == {"name": "predictions", "datatype": datatype, "shape": shape, "data": data}


def test_dataframe_rows_become_one_tensor_per_column():
    out = {"predictions": [{"score": 0.5, "label": "a"}, {"score": 1.5, "label": "b"}]}
    assert oip.encode_outputs(out) == [
        {"name": "score", "datatype": "FP64", "shape": [2], "data": [0.5, 1.5]},
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
    ]


def test_metadata_from_the_signature_or_from_feature_names():
    info = {"feature_names": NAMES, "classes": [0, 1]}  # an entry without contract C1 fields
    meta = oip.model_metadata("bc", ["1", "2"], info, oip.platform_of(info))
    assert meta["name"] == "bc" and meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": n, "datatype": "FP64", "shape": [-1]} for n in NAMES]
    assert meta["outputs"] == [
        {"name": "predictions", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
    ]
    regressor = {
        "feature_names": ["x0", "x1"],
        "task": "regression",
        "input_schema": [{"name": None, "type": "tensor", "dtype": "float32", "shape": [-1, 2]}],
        "output_schema": [],
        "classes": [],
    }
    meta = oip.model_metadata("r", ["4"], regressor, "mlflow")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}]
    assert meta["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
    columns = {
        "input_schema": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"}],
        "output_schema": [{"name": "s", "type": "double"}, {"name": "t", "type": "boolean"}],
        "task": "other",
    }
    assert [(t["name"], t["datatype"]) for t in oip.model_inputs(columns)] == [
        ("a", "INT64"),
        ("b", "BYTES"),
    ]
    assert [(t["name"], t["datatype"]) for t in oip.model_outputs(columns)] == [
        ("s", "FP64"),
        ("t", "BOOL"),
    ]


def _doc() -> dict:
    """A minimal FastAPI-shaped document with the routes the router serves."""
    body = {"content": {"application/json": {"example": {}}, "text/csv": {"example": ""}}}
    paths = {
        "/predict": {"post": {"requestBody": json.loads(json.dumps(body))}},
        "/invocations": {"post": {"requestBody": json.loads(json.dumps(body))}},
        "/v2/models/{name}/infer": {
            "post": {
                "parameters": [{"name": "name", "in": "path"}],
                "requestBody": json.loads(json.dumps(body)),
            }
        },
        "/feedback": {"post": {}},
        "/admin/weights": {"post": {}},
        "/monitor/status": {"get": {}},
        "/health": {"get": {"responses": {"200": {"description": "ok"}}}},
    }
    return {"paths": paths}


def test_openapi_documents_errors_security_and_the_served_models_example():
    doc = fill_examples(document_openapi(_doc()), NAMES, "bc", "3")
    paths = doc["paths"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/feedback", "/admin/weights"):
        op = paths[path]["post"]
        assert op["security"] == [{"bearer": []}]
        assert {"401", "403", "413", "422"} <= set(op["responses"])
    assert "security" not in paths["/predict"]["post"]
    assert {"400", "404", "413", "422", "503"} <= set(paths["/predict"]["post"]["responses"])
    assert "415" in paths["/invocations"]["post"]["responses"]
    assert set(paths["/health"]["get"]["responses"]) == {"200", "503"}
    infer = paths["/v2/models/{name}/infer"]["post"]
    schema = infer["responses"]["404"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["error"]

    predict = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert predict["example"] == {"features": [[0.0] * 3]}
    inv = paths["/invocations"]["post"]["requestBody"]["content"]
    assert inv["application/json"]["example"]["dataframe_split"]["columns"] == NAMES
    assert inv["text/csv"]["example"].splitlines()[0] == ",".join(NAMES)
    tensor = infer["requestBody"]["content"]["application/json"]["example"]["inputs"][0]
    assert tensor["shape"] == [1, 3] and len(tensor["data"]) == 3
    assert infer["parameters"][0]["example"] == "bc"
    # and the example parses as a request for this model
    assert parse(infer["requestBody"]["content"]["application/json"]["example"]).X.shape == (1, 3)


# ---- a model with a string (categorical) column: one BYTES tensor for it ----------------------
MIXED = ["x", "color", "n"]
STRINGS = [1]  # "color", as schemas.string_columns finds it in the signature


def mixed_body(colors=("red", "blue"), color_type="BYTES") -> dict:
    return {
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP64", "data": [0.5, -1.0]},
            {"name": "color", "shape": [2], "datatype": color_type, "data": list(colors)},
            {"name": "n", "shape": [2, 1], "datatype": "INT64", "data": [[3], [4]]},
        ]
    }


def parse_mixed(body, binary=b"") -> np.ndarray:
    return oip.parse_infer(body, MIXED, 10, binary=binary, strings=STRINGS).X


def test_a_bytes_tensor_per_string_column_gives_the_object_matrix():
    X = parse_mixed(mixed_body())
    assert X.dtype == object and X.tolist() == [[0.5, "red", 3.0], [-1.0, "blue", 4.0]]
    assert all(type(v) is str for v in X[:, 1]) and all(type(v) is float for v in X[:, 0])
    # Binary BYTES data (tritonclient's default): a 4-byte little-endian length per element.
    chunk = b"".join(len(s).to_bytes(4, "little") + s for s in (b"red", b"blue"))
    body = mixed_body()
    body["inputs"][1] = {
        "name": "color",
        "shape": [2],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(chunk)},
    }
    assert parse_mixed(body, binary=chunk).tolist() == X.tolist()
    # The signature says which columns are strings: the metadata calls them BYTES.
    info = {"input_schema": [{"name": "color", "type": "string"}], "feature_names": ["color"]}
    assert oip.model_inputs(info) == [{"name": "color", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize(
    "body, fragment",
    [
        (mixed_body(colors=(1, 2), color_type="FP64"), "send it as a BYTES tensor"),
        (mixed_body(colors=(1, 2)), "datatype BYTES but data holds integers"),
        (mixed_body(colors=("red", "x" * 257)), "at most 256 characters"),
        (
            {"inputs": [{"name": "m", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            "has string columns ['color']; send one tensor per feature",
        ),
    ],
    ids=["numeric_tensor", "numbers_as_bytes", "too_long", "matrix_layout"],
)
def test_a_string_column_refuses_what_is_not_a_short_string(body, fragment):
    with pytest.raises(InputError) as err:
        parse_mixed(body)
    assert err.value.status == 400 and fragment in err.value.detail, err.value.detail


def test_openapi_example_of_a_string_column_is_a_string_and_parses():
    from deployments import schemas

    doc = fill_examples(document_openapi(_doc()), MIXED, "team", "2", STRINGS)
    paths = doc["paths"]
    predict = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert predict["example"] == {"features": [[0.0, "a", 0.0]]}
    inv = paths["/invocations"]["post"]["requestBody"]["content"]
    assert inv["text/csv"]["example"] == "x,color,n\n0.0,a,0.0\n"
    infer = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    tensors = infer["application/json"]["example"]["inputs"]
    assert [t["datatype"] for t in tensors] == ["FP64", "BYTES", "FP64"]
    # Every example is a valid request for this model.
    want = [[0.0, "a", 0.0]]
    assert parse_mixed(infer["application/json"]["example"]).tolist() == want
    rows = schemas.predict_rows(predict["example"])
    assert schemas.to_matrix(rows, MIXED, 10, strings=STRINGS).tolist() == want
    split = schemas.invocation_rows(inv["application/json"]["example"], MIXED)
    assert schemas.to_matrix(split, MIXED, 10, strings=STRINGS).tolist() == want
