"""Input parsing: every bad input is a 4xx with a message saying what was expected."""

import json

import numpy as np
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
