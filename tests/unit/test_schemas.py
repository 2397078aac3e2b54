"""Input parsing: every bad input is a 4xx with a message saying what was expected."""

import json

import numpy as np
import pandas as pd
import pytest

from deployments import schemas
from deployments.schemas import InputError

NAMES = ["a", "b", "c"]


def rows(payload, max_rows=10):
    return schemas.to_matrix(schemas.predict_rows(payload), NAMES, max_rows)


def test_lists_objects_single_and_many_rows_agree():
    many = rows({"features": [[1, 2, 3], [4.5, 5, 6]]})
    assert many.shape == (2, 3) and many.dtype == np.float64
    np.testing.assert_array_equal(rows({"features": [1, 2, 3]}), [[1, 2, 3]])
    np.testing.assert_array_equal(rows({"features": {"c": 3, "a": 1, "b": 2}}), [[1, 2, 3]])
    np.testing.assert_array_equal(
        rows({"features": [{"a": 1, "b": 2, "c": 3}, {"a": 4.5, "b": 5, "c": 6}]}), many
    )


@pytest.mark.parametrize(
    "payload, status, fragment",
    [
        ({"features": []}, 422, "empty batch"),
        ({"features": [[1, 2]]}, 422, "expects 3 features"),
        ({"features": [[1, 2, 3], [1, 2]]}, 422, "row 1 has 2 values"),
        ({"features": [[1, "x", 3]]}, 422, "'x' is not a number"),
        ({"features": [[1, True, 3]]}, 422, "True is not a number"),
        ({"features": [[1, None, 3]]}, 422, "None is not a number"),
        ({"features": [[1, float("nan"), 3]]}, 422, "not a finite number"),
        ({"features": [[1, float("inf"), 3]]}, 422, "not a finite number"),
        ({"features": [{"a": 1, "b": 2}]}, 422, "missing ['c']"),
        ({"features": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, 422, "unknown ['d']"),
        ({"features": [[1, 2, 3]] * 11}, 413, "over the maximum of 10"),
        ({"rows": [[1, 2, 3]]}, 422, "missing field 'features'"),
        ({"features": "1,2,3"}, 422, "must be a list"),
        ([1, 2, 3], 422, "expected a JSON object"),
    ],
)
def test_bad_input_is_a_clear_4xx(payload, status, fragment):
    with pytest.raises(InputError) as err:
        rows(payload)
    assert err.value.status == status
    assert fragment in err.value.detail


@pytest.mark.parametrize("body", [b"", b"not json", b'{"features": [', b"\xff\xfe"])
def test_non_json_body_is_400(body):
    with pytest.raises(InputError) as err:
        schemas.parse_json(body)
    assert err.value.status == 400
    assert "JSON" in err.value.detail


def test_json_nan_literal_is_refused():
    payload = schemas.parse_json(b'{"features": [[1, NaN, 3]]}')
    with pytest.raises(InputError, match="finite"):
        rows(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3], [4, 5, 6]]}},
        {"dataframe_split": {"columns": ["c", "b", "a"], "data": [[3, 2, 1], [6, 5, 4]]}},
        {"dataframe_records": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]},
        {"instances": [[1, 2, 3], [4, 5, 6]]},
        {"inputs": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]},
        {"inputs": {"a": [1, 4], "b": [2, 5], "c": [3, 6]}},
    ],
)
def test_mlflow_scoring_protocol_formats(payload):
    got = schemas.to_matrix(schemas.invocation_rows(payload, NAMES), NAMES, 10)
    np.testing.assert_array_equal(got, [[1, 2, 3], [4, 5, 6]])


def test_invocations_need_exactly_one_format():
    with pytest.raises(InputError, match="exactly one of"):
        schemas.invocation_rows({"instances": [], "inputs": []}, NAMES)
    with pytest.raises(InputError, match="exactly one of"):
        schemas.invocation_rows(json.loads('{"data": [[1,2,3]]}'), NAMES)


# ---- inputs that used to pass validation and then broke the model or the parser -------------


@pytest.mark.parametrize(
    "body, fragment",
    [
        # Cells that are lists: a 3-D input numpy turns into a float array of shape (1, 3, 2).
        (b'{"features": [[[1, 2], [3, 4], [5, 6]]]}', "a list of 2 items is not a number"),
        # features as an object of columns (the "inputs" tensor form is /invocations' only).
        (b'{"features": {"a": [1, 2], "b": [3, 4], "c": [5, 6]}}', "is not a number"),
        # Finite, but beyond float32: tree models cast to float32 and raise.
        (b'{"features": [[1, 3.5e38, 3]]}', "too large"),
        (b'{"features": [[1, -1e39, 3]]}', "too large"),
        # A scaler overflows on it.
        (b'{"features": [[1e308, 2, 3]]}', "too large"),
        # An integer literal beyond float range: OverflowError in math.isfinite / numpy.
        (b'{"features": [[1, 2, ' + b"9" * 400 + b"]]}", "an integer of 400 digits is too large"),
        (b'{"features": [{"a": 1, "b": 2, "c": ' + b"9" * 400 + b"}]}", "too large"),
    ],
)
def test_values_a_model_would_raise_on_are_refused_as_422(body, fragment):
    with pytest.raises(InputError) as err:
        rows(schemas.parse_json(body))
    assert err.value.status == 422
    assert fragment in err.value.detail, err.value.detail


def test_magnitude_bound_is_float32_by_default_and_configurable():
    limit = float(np.finfo(np.float32).max)
    got = rows({"features": [[limit, -limit, 10**30]]})
    np.testing.assert_array_equal(got, [[limit, -limit, 1e30]])
    with pytest.raises(InputError, match="magnitude at most 1000"):
        schemas.to_matrix([[1, 2, 1001]], NAMES, 10, max_abs=1000)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError inside json.loads
        b'{"features": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}",  # parses, but over the cap
        b'{"feedback": [{"request_id": "x", "label": ' + b"[" * 33 + b"]" * 33 + b"}]}",
    ],
)
def test_deep_nesting_is_a_400_not_a_recursion_error(body):
    with pytest.raises(InputError) as err:
        schemas.parse_json(body)
    assert err.value.status == 400
    assert "deeper than 32 levels" in err.value.detail


def test_nesting_up_to_the_cap_parses():
    assert schemas.parse_json(b"[" * 32 + b"]" * 32, max_depth=32) is not None
    with pytest.raises(InputError):
        schemas.parse_json(b"[" * 5 + b"]" * 5, max_depth=4)


@pytest.mark.parametrize("columns", [[["a"], "b", "c"], [1, "b", "c"], [None, "b", "c"]])
def test_non_string_dataframe_split_column_is_422(columns):
    payload = {"dataframe_split": {"columns": columns, "data": [[1, 2, 3]]}}
    with pytest.raises(InputError) as err:
        schemas.invocation_rows(payload, NAMES)
    assert err.value.status == 422
    assert "column 0" in err.value.detail and "not a string" in err.value.detail


def test_lone_surrogate_in_a_text_field_is_422():
    payload = schemas.parse_json(b'{"routing_key": "ab\\ud800cd"}')
    with pytest.raises(InputError) as err:
        schemas.text_field(payload["routing_key"], "routing_key")
    assert err.value.status == 422 and "routing_key" in err.value.detail
    assert schemas.text_field("user-\u00e9", "routing_key") == "user-\u00e9"
    assert schemas.text_field(3, "model_version") == "3"
    assert schemas.text_field(None, "model_version") is None
    for bad in ([1], {"a": 1}, 1.5, True, "", "x" * 257):
        with pytest.raises(InputError):
            schemas.text_field(bad, "routing_key")


@pytest.mark.parametrize(
    "item",
    [
        {"request_id": "r", "label": 10**400},
        {"request_id": "r", "label": "x" * 300},
        {"request_id": "r\ud800", "label": 1},
        {"request_id": "r" * 129, "label": 1},
    ],
)
def test_feedback_refuses_labels_and_ids_the_monitor_cannot_hold(item):
    with pytest.raises(InputError) as err:
        schemas.feedback_items(item)
    assert err.value.status == 422


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"blue": float("nan")}, "weight of blue"),
        ({"blue": float("inf"), "green": 0}, "weight of blue"),
        ({"blue": 1e308}, "weight of blue"),
        ({"blue": 10**400}, "weight of blue"),
        ({"blue": -0.5, "green": 1}, "weight of blue"),
        ({"blue": True}, "weight of blue"),
        ({"blue": "1"}, "weight of blue"),
        ({"purple": 1}, "unknown slots ['purple']"),
        ({"blue": 0, "green": 0}, "positive weight"),
        ({}, "expected"),
        ([1, 2], "expected"),
    ],
)
def test_bad_weights_are_422_before_the_controller(body, fragment):
    with pytest.raises(InputError) as err:
        schemas.weights(body)
    assert err.value.status == 422
    assert fragment in err.value.detail, err.value.detail


def test_good_weights_pass_as_floats():
    assert schemas.weights({"blue": 9, "green": 1.5}) == {"blue": 9.0, "green": 1.5}
    assert schemas.weights({"green": 1e6}) == {"green": 1e6}


def test_error_messages_never_echo_a_huge_value():
    big = [[1, 2, [0] * 100_000]]
    with pytest.raises(InputError) as err:
        schemas.to_matrix(big, NAMES, 10)
    assert len(err.value.detail) < 300


# ---- /invocations bodies other than JSON --------------------------------------------------
CSV_NAMES = ["mean radius", "mean texture"]


@pytest.mark.parametrize(
    "header,fmt",
    [
        (None, "json"),
        ("application/json", "json"),
        ("application/json; charset=utf-8", "json"),
        ("text/csv", "csv"),
        ("text/csv; charset=UTF-8", "csv"),
        ("application/vnd.apache.parquet", "parquet"),
        ("application/x-parquet", "parquet"),
    ],
)
def test_invocations_content_types_as_mlflow_accepts_them(header, fmt):
    assert schemas.invocation_format(header) == fmt


@pytest.mark.parametrize(
    "header,fragment",
    [
        ("application/xml", "accepts ['application/json'"),
        ("text/plain", "text/csv"),
        ("application/json; charset=latin-1", "charset=utf-8"),
        ("text/csv; format=pandas-split", "unrecognized Content-Type parameters"),
    ],
)
def test_other_content_types_are_415_naming_the_supported_ones(header, fragment):
    with pytest.raises(InputError) as err:
        schemas.invocation_format(header)
    assert err.value.status == 415 and fragment in err.value.detail


def test_csv_and_parquet_bodies_give_the_same_matrix_as_json():
    frame = pd.DataFrame([[1.5, 2.0], [3.0, 4.25]], columns=CSV_NAMES)
    expected = schemas.to_matrix(frame.values.tolist(), CSV_NAMES, 10)
    from_csv = schemas.parse_csv(frame.to_csv(index=False).encode())
    np.testing.assert_array_equal(schemas.frame_to_matrix(from_csv, CSV_NAMES, 10), expected)
    from_parquet = schemas.parse_parquet(frame.to_parquet())
    np.testing.assert_array_equal(schemas.frame_to_matrix(from_parquet, CSV_NAMES, 10), expected)
    # columns in another order are put in feature order
    swapped = frame[CSV_NAMES[::-1]]
    np.testing.assert_array_equal(schemas.frame_to_matrix(swapped, CSV_NAMES, 10), expected)


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        (b"", 400, "empty CSV body"),
        (b"\xff\xfe\x00", 400, "not valid UTF-8"),
        (b'a,b\n"1,2\n', 400, "failed to parse the body as CSV"),
        (b"mean radius,other\n1,2\n", 422, "unknown ['other']"),
        (b"mean radius,mean texture\n1,x\n", 422, "expected numbers"),
        (b"mean radius,mean texture\n1,\n", 422, "not a finite number"),
        (b"mean radius,mean texture\n1,1e39\n", 422, "magnitude at most"),
        (b"mean radius,mean texture\n" + b"1,2\n" * 11, 413, "over the maximum of 10 rows"),
        (b"mean radius,mean texture\n", 422, "empty batch"),
    ],
)
def test_bad_csv_is_a_clear_4xx(body, status, fragment):
    with pytest.raises(InputError) as err:
        schemas.frame_to_matrix(schemas.parse_csv(body), CSV_NAMES, 10)
    assert err.value.status == status and fragment in err.value.detail, err.value.detail


@pytest.mark.parametrize("body", [b"", b"PAR1 not really parquet", b"a,b\n1,2\n"])
def test_bad_parquet_is_400(body):
    with pytest.raises(InputError) as err:
        schemas.parse_parquet(body)
    assert err.value.status == 400 and "parquet" in err.value.detail


SIGNED = {
    "feature_names": ["x", "n", "flag", "big"],
    "input_schema": [
        {"name": "x", "type": "double"},
        {"name": "n", "type": "long"},
        {"name": "flag", "type": "boolean"},
        {"name": "big", "type": "integer"},
    ],
}


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [
        ([0.5, 1.5, 1, 3], "'n'", "1.5 is not a whole number"),
        ([0.5, 2, 0.5, 3], "'flag'", "0.5 is not 0 or 1"),
        ([0.5, 2, 2, 3], "'flag'", "2.0 is not 0 or 1"),
        ([0.5, 2, 1, 2**31], "'big'", "from -2147483648 to 2147483647"),
        ([0.5, 2.0**63, 1, 3], "'n'", "9.223372036854776e+18 is not a whole number"),
    ],
)
def test_values_the_signature_type_does_not_take_are_422_naming_the_cell(row, column, fragment):
    X = np.array([[0.1, 1, 0, 1], row], dtype=np.float64)
    with pytest.raises(InputError) as err:
        schemas.check_column_types(X, SIGNED)
    assert err.value.status == 422
    assert err.value.detail.startswith(f"row 1, column {column}: ") and fragment in err.value.detail


def test_whole_numbers_booleans_and_fractions_in_double_columns_pass():
    X = np.array([[0.25, -3, 0, -(2**31)], [1e300, 2**53, 1, 2**31 - 1]], dtype=np.float64)
    schemas.check_column_types(X, SIGNED)  # raises on any cell its column does not take
    # A version without a signature (our own models name columns in a tag) checks nothing.
    schemas.check_column_types(X, {"feature_names": ["x", "n", "flag", "big"]})


# ---- a model whose signature has a string (categorical) column -------------------------------
MIXED_INFO = {
    "feature_names": ["x", "color", "n"],
    "input_schema": [
        {"name": "x", "type": "double"},
        {"name": "color", "type": "string"},
        {"name": "n", "type": "long"},
    ],
}


def mixed(rows_, max_rows=10):
    names = MIXED_INFO["feature_names"]
    strings = schemas.string_columns(MIXED_INFO)
    return schemas.to_matrix(rows_, names, max_rows, strings=strings)


def test_string_columns_come_from_the_signature_and_numeric_models_keep_floats():
    assert schemas.string_columns(MIXED_INFO) == [1]
    numeric = {
        "feature_names": NAMES,
        "input_schema": [{"name": n, "type": "double"} for n in NAMES],
    }
    assert schemas.string_columns(numeric) == []
    assert schemas.string_columns({"feature_names": NAMES}) == []  # our own models: no schema
    assert rows({"features": [[1, 2, 3]]}).dtype == np.float64


def test_mixed_rows_as_lists_objects_and_frames_give_one_object_matrix():
    want = [[0.5, "red", 3.0], [-1.0, "blue", 4.0]]
    X = mixed([[0.5, "red", 3], [-1, "blue", 4]])
    assert X.dtype == object and X.tolist() == want
    assert all(type(v) is float for v in X[:, 0]) and all(type(v) is str for v in X[:, 1])
    records = [{"color": "red", "n": 3, "x": 0.5}, {"n": 4, "x": -1, "color": "blue"}]
    assert mixed(records).tolist() == want
    assert mixed({"x": 0.5, "color": "red", "n": 3}).tolist() == want[:1]  # one object
    assert mixed([0.5, "red", 3]).tolist() == want[:1]  # one flat row
    split = {"dataframe_split": {"columns": ["color", "x", "n"], "data": [["red", 0.5, 3]]}}
    assert mixed(schemas.invocation_rows(split, MIXED_INFO["feature_names"])).tolist() == want[:1]
    csv = schemas.parse_csv(b"n,color,x\n3,red,0.5\n4,blue,-1\n")
    X = schemas.frame_to_matrix(csv, MIXED_INFO["feature_names"], 10, strings=[1])
    assert X.tolist() == want
    # The signature's integer check reads the numbers of an object matrix too.
    schemas.check_column_types(X, MIXED_INFO)
    with pytest.raises(InputError, match=r"row 0, column 'n': 2.5 is not a whole number"):
        schemas.check_column_types(mixed([[0.5, "red", 2.5]]), MIXED_INFO)


@pytest.mark.parametrize(
    "row, fragment",
    [
        ([0.5, 7, 3], "row 0, column 'color': 7 is not a string"),
        ([0.5, True, 3], "row 0, column 'color': True is not a string"),
        ([0.5, None, 3], "row 0, column 'color': None is not a string"),
        ([0.5, ["red"], 3], "row 0, column 'color': a list of 1 items is not a string"),
        ([0.5, "x" * 257, 3], "column 'color': expected a string of at most 256 characters"),
        ([0.5, "\ud800", 3], "column 'color': expected a string of at most 256 characters"),
        (["0.5", "red", 3], "row 0, column 'x': '0.5' is not a number"),
        ([True, "red", 3], "row 0, column 'x': True is not a number"),
        ([1e39, "red", 3], "row 0, column 'x': 1e+39 is not a finite number"),
        ([10**400, "red", 3], "row 0, column 'x': an integer of 401 digits is not a finite"),
    ],
    ids=[
        "number_in_string",
        "bool_in_string",
        "null_in_string",
        "list_in_string",
        "too_long",
        "lone_surrogate",
        "string_in_number",
        "bool_in_number",
        "beyond_float32",
        "huge_integer",
    ],
)
def test_a_mixed_row_refuses_each_wrong_cell_by_row_and_column(row, fragment):
    with pytest.raises(InputError) as err:
        mixed([[1.0, "ok", 1], row])
    assert err.value.status == 422
    assert fragment.replace("row 0", "row 1") in err.value.detail, err.value.detail
    if "'color'" in fragment and "not a" in fragment:
        assert "string" in err.value.detail


def test_a_csv_cell_that_is_not_text_in_a_string_column_is_422():
    # An empty cell is NaN to pandas: not a string, said by row and column.
    csv = schemas.parse_csv(b"x,color,n\n0.5,,3\n")
    with pytest.raises(InputError) as err:
        schemas.frame_to_matrix(csv, MIXED_INFO["feature_names"], 10, strings=[1])
    assert err.value.status == 422 and "row 0, column 'color'" in err.value.detail


def test_json_bodies_parse_alike_on_orjson_and_on_its_json_fallback():
    """orjson reads ordinary bodies; what it refuses (NaN, a 400-digit number, a lone
    surrogate escape) goes to json, so those keep the answers the routes were written for."""
    for body in (
        b'{"features": [[1, 2.5, -3e-7]], "model_version": "2"}',
        b'{"features": [[1, NaN, 3]]}',
        b'{"features": [[' + b"9" * 400 + b"]]}",
        b'{"routing_key": "ab\\ud800cd"}',
        b'{"a": [{"b": [1, {"c": null}]}], "t": true}',
    ):
        got = schemas.parse_json(body)
        assert json.dumps(got) == json.dumps(json.loads(body)), body


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_npy_bodies_become_the_float_matrix_json_rows_would():
    X = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    names = list("abcd")
    for a in (X, np.asfortranarray(X), X.astype(np.float32), X.astype(np.int32)):
        got = schemas.npy_matrix(schemas.parse_npy(_npy(a), 10), names)
        assert got.dtype == np.float64 and got.flags.writeable
        np.testing.assert_array_equal(got, a.astype(np.float64))
    one = schemas.npy_matrix(schemas.parse_npy(_npy(X[1]), 10), names)
    np.testing.assert_array_equal(one, X[1:2])
    assert schemas.is_npy("application/x-npy; charset=binary")
    assert not schemas.is_npy("application/json") and not schemas.is_npy(None)


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"", 400, "not a readable .npy"),
        (_npy(np.zeros((2, 4)))[:-1], 400, "bytes follow it"),
        (_npy(np.array([object()], dtype=object)), 422, "not a little-endian number"),
        (_npy(np.zeros((2, 4), dtype=">f8")), 422, "not a little-endian number"),
        (_npy(np.zeros((2, 2, 2))), 422, "not 1-D or 2-D"),
        (_npy(np.zeros((11, 4))), 413, "maximum of 10 rows"),
        (_npy(np.zeros((2, 3))), 422, "expects 4 features"),
        (_npy(np.array([[1, 2, np.inf, 4]])), 422, "row 0, feature 2"),
    ],
)
def test_bad_npy_bodies_are_4xx_saying_what_was_expected(body, status, fragment):
    with pytest.raises(schemas.InputError) as err:
        schemas.npy_matrix(schemas.parse_npy(body, 10), list("abcd"))
    assert err.value.status == status and fragment in err.value.detail, err.value.detail


def test_npy_bodies_are_refused_for_a_model_with_string_columns():
    arr = schemas.parse_npy(_npy(np.zeros((1, 2))), 10)
    with pytest.raises(schemas.InputError) as err:
        schemas.npy_matrix(arr, ["x", "colour"], strings=[1])
    assert err.value.status == 415 and "'colour'" in err.value.detail
