"""Request parsing and validation for the HTTP API. Pure functions, no Ray.

Every rejection is an `InputError` with an HTTP status and a message that says what was wrong
and what was expected; the router turns it into a JSON 4xx.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


class InputError(Exception):
    """A client error: ``status`` is the HTTP status, ``detail`` the message."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_json(body: bytes) -> Any:
    if not body:
        raise InputError(400, "empty request body; expected a JSON object")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            400, f"request body is not valid JSON ({exc}); expected a JSON object"
        ) from exc


def _expect_object(payload: Any) -> dict:
    if not isinstance(payload, dict):
        raise InputError(
            422, f"expected a JSON object at the top level, got {type(payload).__name__}"
        )
    return payload


def _rows_from_records(records: list, feature_names: list[str]) -> list[list[Any]]:
    expected = set(feature_names)
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(
                422, f"row {i}: expected an object keyed by feature name, got {type(rec).__name__}"
            )
        keys = set(rec)
        if keys != expected:
            missing = sorted(expected - keys)
            extra = sorted(keys - expected)
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unknown {extra}")
            raise InputError(
                422,
                f"row {i}: feature names do not match the model: {'; '.join(parts)}. "
                f"Expected exactly: {feature_names}",
            )
        rows.append([rec[name] for name in feature_names])
    return rows


def _bad_cell(rows: list, n_features: int) -> str:
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            return f"row {i} is a {type(row).__name__}, expected a list of {n_features} numbers"
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"row {i}, feature {j}: {v!r} is not a number"
            if not math.isfinite(v):
                return (
                    f"row {i}, feature {j}: {v!r} is not a finite number "
                    "(NaN and infinity are refused)"
                )
    return "values must be finite numbers"


def to_matrix(rows: Any, feature_names: list[str], max_rows: int) -> np.ndarray:
    """Turn rows (one or many, lists or objects keyed by feature name) into a float matrix
    of shape (n, len(feature_names)), or raise `InputError`."""
    n_features = len(feature_names)
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        raise InputError(
            422,
            f"features must be a list of rows (or one row), got {type(rows).__name__}; "
            f"expected e.g. [[{n_features} numbers], ...]",
        )
    if not rows:
        raise InputError(422, "empty batch: send at least one row")
    if not isinstance(rows[0], (list, dict)):
        rows = [rows]  # one flat row
    if isinstance(rows[0], dict):
        rows = _rows_from_records(rows, feature_names)
    if len(rows) > max_rows:
        raise InputError(
            413, f"batch of {len(rows)} rows is over the maximum of {max_rows} rows per request"
        )
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_features:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(
                422,
                f"row {i} has {got} values; the model expects {n_features} features: "
                f"{feature_names}",
            )
    # numpy would silently turn true/false into 1/0.
    if any(type(v) is bool for row in rows for v in row):
        raise InputError(422, _bad_cell(rows, n_features))
    try:
        arr = np.asarray(rows)
    except (ValueError, TypeError):
        raise InputError(422, _bad_cell(rows, n_features)) from None
    if arr.dtype.kind not in "iuf":
        raise InputError(422, _bad_cell(rows, n_features))
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(422, _bad_cell(rows, n_features))
    return arr


def predict_rows(payload: Any) -> Any:
    """The rows of a ``/predict`` body: ``{"features": ...}``."""
    body = _expect_object(payload)
    if "features" not in body:
        raise InputError(
            422,
            "missing field 'features'; expected {\"features\": [[...], ...]} or "
            '{"features": [{"name": value, ...}, ...]}',
        )
    return body["features"]


INVOCATION_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def invocation_rows(payload: Any, feature_names: list[str]) -> Any:
    """The rows of an MLflow scoring-protocol body (``POST /invocations``)."""
    body = _expect_object(payload)
    present = [k for k in INVOCATION_KEYS if k in body]
    if len(present) != 1:
        raise InputError(
            422,
            f"expected exactly one of {list(INVOCATION_KEYS)} in the body, got "
            f"{present or sorted(body)}",
        )
    key = present[0]
    value = body[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise InputError(422, 'dataframe_split must be {"columns": [...], "data": [[...]]}')
        columns = value.get("columns")
        data = value["data"]
        if columns is None:
            return data
        if not isinstance(columns, list) or not isinstance(data, list):
            raise InputError(422, "dataframe_split: columns and data must be lists")
        records = []
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise InputError(
                    422, f"dataframe_split: row {i} does not have {len(columns)} values"
                )
            records.append(dict(zip(columns, row, strict=True)))
        return records
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise InputError(422, "dataframe_records must be a list of objects")
        return value
    # instances / inputs: a list of rows, or a dict of columns (tensor-style input)
    if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
        lengths = {len(v) for v in value.values()}
        if len(lengths) != 1:
            raise InputError(422, f"{key}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop()
        return [{k: v[i] for k, v in value.items()} for i in range(n)]
    return value


MAX_FEEDBACK_ITEMS = 10_000


def _label_ok(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and not (isinstance(v, float) and not math.isfinite(v))


def feedback_items(payload: Any) -> list[dict[str, Any]]:
    """Validate a ``/feedback`` body into ``[{"request_id": str, "label": ...}, ...]``.

    A multi-row prediction gets a list of labels, one per row, in row order.
    """
    if isinstance(payload, dict) and "feedback" in payload:
        payload = payload["feedback"]
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise InputError(422, "no feedback items: send {request_id, label} or a list of them")
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise InputError(413, f"{len(items)} feedback items; the maximum is {MAX_FEEDBACK_ITEMS}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "request_id" not in item or "label" not in item:
            raise InputError(
                422, f"feedback item {i}: expected an object with 'request_id' and 'label'"
            )
        rid, label = item["request_id"], item["label"]
        if not isinstance(rid, str) or not rid:
            raise InputError(422, f"feedback item {i}: request_id must be a non-empty string")
        labels = label if isinstance(label, list) else [label]
        if not labels or not all(_label_ok(v) for v in labels):
            raise InputError(
                422,
                f"feedback item {i}: label must be a class label (number or string) or a "
                "list of them for a multi-row request",
            )
        out.append({"request_id": rid, "label": label})
    return out
