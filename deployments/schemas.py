"""Request parsing and validation for the HTTP API. Pure functions, no Ray.

Every rejection is an `InputError` with an HTTP status and a message that says what was wrong
and what was expected; the router turns it into a JSON 4xx.

Rows become a float64 matrix, built by numpy in one pass. Only a model whose signature has
string (categorical) columns gets an object matrix instead (`mixed_matrix`: ``str`` and
``float`` cells, checked one by one), so numeric models pay nothing for strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from itertools import chain
from typing import Any

import numpy as np
import orjson

# Largest finite float32: tree models cast their input to float32 and raise beyond it, and a
# value this large already means a broken client; the default magnitude bound on features.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Deepest JSON any route needs is 4 (an object of a list of rows of cells, or a feedback item
# with a label list); Python's own parser gives up near 1,000 with a RecursionError.
MAX_JSON_DEPTH = 32
# Types a JSON decoder makes that hold no nesting: a list of only these needs no deeper look.
_SCALARS = frozenset({int, float, str, bool, type(None)})
_LIST = {list}
_NUMBERS = frozenset({int, float})


class InputError(Exception):
    """A client error: ``status`` is the HTTP status, ``detail`` the message."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int, route: str
) -> bytes:
    """Read a request body of at most ``limit`` bytes, or raise `InputError` 413 (400 for a
    malformed Content-Length).

    A declared length over the limit is refused before a byte of the body is read; a body sent
    without one (chunked) or longer than declared is counted while it streams and refused as
    soon as it passes the limit, so a router never holds more than ``limit`` bytes of it."""
    too_large = (
        f"request body is over the limit of {limit} bytes for {route}; split it into smaller "
        "requests"
    )
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise InputError(400, "invalid Content-Length header: expected a byte count") from None
        if declared < 0:
            raise InputError(400, "invalid Content-Length header: expected a byte count")
        if declared > limit:
            raise InputError(413, too_large)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise InputError(413, too_large)
        parts.append(chunk)
    return b"".join(parts)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/objects deeper than ``limit`` (iterative: a deep value
    must not exhaust the stack here either)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v
        if depth > limit:
            return True
        # set(map(type, ...)) runs in C: a row of 30 numbers costs one call, not 30.
        kinds = set(map(type, children))
        if kinds <= _SCALARS:
            continue
        # A list of rows of scalars (a batch) in one more C pass, not one per row.
        flat = chain.from_iterable(children) if kinds == _LIST and depth < limit else None
        if flat is not None and set(map(type, flat)) <= _SCALARS:
            continue
        for c in children:
            if isinstance(c, (list, dict)):
                stack.append((c, depth + 1))
    return False


def parse_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a JSON body, or raise `InputError` 400 (empty, invalid, nested too deeply)."""
    if not body:
        raise InputError(400, "empty request body; expected a JSON object")
    too_deep = (
        f"request body nests JSON arrays/objects deeper than {max_depth} levels; expected "
        "an object of rows of values or of tensors (see /docs for this route's body)"
    )
    try:
        # orjson first (several times faster on a batch of rows); what it refuses (NaN, a
        # number beyond float range, a lone surrogate escape, nesting past 1,024) goes to json,
        # whose answer and errors the checks below and the routes' messages were written for.
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = _json_loads(body, too_deep)
    if isinstance(value, (list, dict)) and _too_deep(value, max_depth):
        raise InputError(400, too_deep)
    return value


def _json_loads(body: bytes, too_deep: str) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise InputError(400, too_deep) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            400, f"request body is not valid JSON ({_clip(str(exc))}); expected a JSON object"
        ) from exc


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _show(v: Any) -> str:
    """A short, safe rendering of a client's value for an error message: containers by type
    and size (their repr can be huge or deeply nested), long numbers and strings clipped."""
    if isinstance(v, list):
        return f"a list of {len(v)} items"
    if isinstance(v, dict):
        return f"an object with {len(v)} keys"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**20:
        return f"an integer of {len(str(abs(v)))} digits"
    return _clip(repr(v))


def text_field(value: Any, name: str, max_len: int = 256) -> str | None:
    """A short text field (``model_version``, ``routing_key``): a string or number of at most
    ``max_len`` characters, valid UTF-8 (JSON can carry a lone surrogate escape such as
    "\\ud800", which no encoder accepts). ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(422, f"{name} must be a string, got {type(value).__name__}")
    text = str(value)
    if not text or len(text) > max_len:
        raise InputError(422, f"{name} must be 1 to {max_len} characters, got {len(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            422, f"{name} is not valid Unicode text (a lone surrogate escape); send UTF-8 text"
        ) from None
    return text


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


def _bad_cell(rows: list, n_features: int, max_abs: float) -> str:
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            return f"row {i} is a {type(row).__name__}, expected a list of {n_features} numbers"
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return (
                    f"row {i}, feature {j}: {_show(v)} is not a number; each cell must be one "
                    "number (a row is a flat list, not a list of lists)"
                )
            try:
                x = float(v)  # an integer literal of 400 digits overflows here
            except OverflowError:
                x = math.inf
            if isinstance(v, float) and not math.isfinite(v):
                return (
                    f"row {i}, feature {j}: {_show(v)} is not a finite number "
                    "(NaN and infinity are refused)"
                )
            if not abs(x) <= max_abs:
                return (
                    f"row {i}, feature {j}: {_show(v)} is too large; expected a number of "
                    f"magnitude at most {max_abs:.7g}"
                )
    return f"values must be finite numbers of magnitude at most {max_abs:.7g}"


def string_columns(info: dict[str, Any]) -> list[int]:
    """Indices in ``info["feature_names"]`` of the columns the version's signature
    (``info["input_schema"]``) types ``string``; empty for a numeric-only model, whose rows
    keep the float matrix path."""
    names = info.get("feature_names") or []
    kinds = {s.get("name"): s.get("type") for s in info.get("input_schema") or ()}
    return [j for j, name in enumerate(names) if kinds.get(name) == "string"]


def to_matrix(
    rows: Any,
    feature_names: list[str],
    max_rows: int,
    max_abs: float = FLOAT32_MAX,
    strings: Sequence[int] = (),
) -> np.ndarray:
    """Turn rows (one or many, lists or objects keyed by feature name) into a float matrix
    of shape (n, len(feature_names)), or raise `InputError`.

    Every cell must be a number of magnitude at most ``max_abs``: a list as a cell (a 3-D
    input, or ``features`` given as an object of columns), a finite value beyond float32 (tree
    models cast to float32 and raise) or 1e308 (a scaler overflows) is the client's error, not
    the model's. A model with string columns (``strings``: their indices, see
    `string_columns`) gets an object matrix instead (`mixed_matrix`)."""
    rows = _row_lists(rows, feature_names, max_rows)
    if strings:
        return mixed_matrix(rows, feature_names, strings, max_abs)
    return _float_matrix(rows, len(feature_names), max_abs)


def _row_lists(rows: Any, feature_names: list[str], max_rows: int) -> list[list[Any]]:
    """``rows`` as a list of lists of ``len(feature_names)`` cells (not yet checked)."""
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
    return rows


def _float_matrix(rows: list[list[Any]], n_features: int, max_abs: float) -> np.ndarray:
    # Every cell a number, checked over the cells' types in one C pass (numpy would turn
    # true/false into 1/0 and "1" into 1.0); else the first bad cell, named.
    if not set(map(type, chain.from_iterable(rows))) <= _NUMBERS:
        raise InputError(422, _bad_cell(rows, n_features, max_abs))
    try:
        arr = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        raise InputError(422, _bad_cell(rows, n_features, max_abs)) from None
    if not (np.abs(arr) <= max_abs).all():  # False for NaN too
        raise InputError(422, _bad_cell(rows, n_features, max_abs))
    return arr


# The longest string a string column takes (a category name, not a document).
MAX_STRING_CHARS = 256


def string_cell_ok(v: str) -> bool:
    """Whether a string column's cell is valid: at most `MAX_STRING_CHARS` characters that
    encode as UTF-8."""
    return len(v) <= MAX_STRING_CHARS and is_utf8(v)


def _string_cell(v: Any, i: int, name: str) -> str:
    if not isinstance(v, str):
        raise InputError(
            422,
            f"row {i}, column {name!r}: {_show(v)} is not a string; the signature's type of "
            "this column is string (send it quoted)",
        )
    if not string_cell_ok(v):
        raise InputError(
            422,
            f"row {i}, column {name!r}: expected a string of at most {MAX_STRING_CHARS} "
            f"characters of valid Unicode, got {len(v)} characters",
        )
    return v


def _number_cell(v: Any, i: int, name: str, max_abs: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(
            422, f"row {i}, column {name!r}: {_show(v)} is not a number; this column takes one"
        )
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not abs(x) <= max_abs:  # NaN too
        raise InputError(
            422,
            f"row {i}, column {name!r}: {_show(v)} is not a finite number of magnitude at most "
            f"{max_abs:.7g} (NaN and infinity are refused)",
        )
    return x


def mixed_matrix(
    rows: list[list[Any]], feature_names: list[str], strings: Sequence[int], max_abs: float
) -> np.ndarray:
    """The object matrix of a model with string columns: ``str`` cells in the columns
    ``strings`` (at most `MAX_STRING_CHARS` characters), ``float`` cells elsewhere under the
    bounds of `to_matrix`; or raise `InputError` 422 naming the row and column."""
    text = set(strings)
    out = np.empty((len(rows), len(feature_names)), dtype=object)
    for i, row in enumerate(rows):
        for j, (name, v) in enumerate(zip(feature_names, row, strict=True)):
            out[i, j] = _string_cell(v, i, name) if j in text else _number_cell(v, i, name, max_abs)
    return out


# MLflow column types that take only some numbers: the whole ones within the type's range,
# or 0 and 1 for a boolean (JSON true/false are refused by to_matrix: numpy would make them 1/0).
_WHOLE_RANGES = {"integer": (-(2**31), 2**31), "long": (-(2**63), 2**63)}  # [lo, hi)


def check_column_types(X: np.ndarray, info: dict[str, Any]) -> None:
    """Raise `InputError` 422 naming the first cell of ``X`` (columns in
    ``info["feature_names"]`` order) that its column's type in the version's signature
    (``info["input_schema"]``) does not take: a fraction or an out-of-range number in an
    integer/long column, anything but 0 or 1 in a boolean one. Without this check the model
    itself fails on the cast, and the client gets a 500 instead of what to fix."""
    names = info.get("feature_names") or []
    for spec in info.get("input_schema") or ():
        kind = spec.get("type")
        if kind not in _WHOLE_RANGES and kind != "boolean" or spec.get("name") not in names:
            continue
        j = names.index(spec["name"])
        col = X[:, j].astype(np.float64, copy=False)  # an object matrix's numbers too
        if kind == "boolean":
            bad = (col != 0) & (col != 1)
            expected = "0 or 1 (the signature's type is boolean)"
        else:
            lo, hi = _WHOLE_RANGES[kind]
            bad = (col != np.floor(col)) | (col < lo) | (col >= hi)
            expected = f"a whole number from {lo} to {hi - 1} (the signature's type is {kind})"
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                422, f"row {i}, column {spec['name']!r}: {float(col[i])!r} is not {expected}"
            )


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
        bad = [i for i, c in enumerate(columns) if not isinstance(c, str)]
        if bad:
            raise InputError(
                422,
                f"dataframe_split: column {bad[0]} is {_show(columns[bad[0]])}, not a string; "
                f"columns must be feature names: {feature_names}",
            )
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
    if isinstance(v, str):
        return 0 < len(v) <= 256 and is_utf8(v)
    if isinstance(v, float):
        return math.isfinite(v)
    # A class label fits int64; a 400-digit integer is not one (numpy would overflow on it).
    return isinstance(v, int) and -(2**63) <= v < 2**63


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
        if not isinstance(rid, str) or not 0 < len(rid) <= 128 or not is_utf8(rid):
            raise InputError(
                422,
                f"feedback item {i}: request_id must be a non-empty string of at most 128 "
                "characters (the request_id a prediction answered)",
            )
        labels = label if isinstance(label, list) else [label]
        if not labels or not all(_label_ok(v) for v in labels):
            raise InputError(
                422,
                f"feedback item {i}: label must be a class label (an integer, a finite number "
                "or a string of at most 256 characters) or a list of them for a multi-row "
                "request",
            )
        out.append({"request_id": rid, "label": label})
    return out


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (JSON lets a lone surrogate such as \\ud800 through)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


MAX_WEIGHT = 1e6


def weights(body: Any, slots: tuple[str, ...] = ("blue", "green")) -> dict[str, float]:
    """Validate an ``/admin/weights`` body: known slot names, finite weights in
    [0, MAX_WEIGHT], at least one positive. A NaN or infinite weight saved to the registry
    would leave no routable slot."""
    expected = '{"blue": <weight>, "green": <weight>}'
    if not isinstance(body, dict) or not body:
        raise InputError(422, f"expected {expected}")
    unknown = sorted(k for k in body if k not in slots)
    if unknown:
        raise InputError(
            422, f"unknown slots {[_clip(k, 40) for k in unknown]}; slots are {list(slots)}"
        )
    out = {}
    for slot, w in body.items():
        ok = isinstance(w, (int, float)) and not isinstance(w, bool)
        if ok:
            try:
                ok = 0.0 <= float(w) <= MAX_WEIGHT  # False for NaN
            except OverflowError:
                ok = False
        if not ok:
            raise InputError(
                422,
                f"weight of {slot} is {_show(w)}; expected a finite number from 0 to "
                f"{MAX_WEIGHT:g}, as in {expected}",
            )
        out[slot] = float(w)
    if not any(out.values()):
        raise InputError(422, "at least one slot needs a positive weight")
    return out


def reason(body: dict, default: str) -> str:
    """The optional ``reason`` of a promote/rollback body: a string of at most 500 characters."""
    value = body.get("reason", default)
    if not isinstance(value, str) or not 0 < len(value) <= 500 or not is_utf8(value):
        raise InputError(422, "reason must be a string of 1 to 500 characters")
    return value


# ---- /invocations bodies other than JSON (as `mlflow models serve`) ------------------------
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"
CONTENT_TYPE_PARQUET = "application/vnd.apache.parquet"  # MLflow's scoring server's name
# MLflow's three, plus the names other clients use for parquet.
INVOCATION_CONTENT_TYPES = {
    CONTENT_TYPE_JSON: "json",
    CONTENT_TYPE_CSV: "csv",
    CONTENT_TYPE_PARQUET: "parquet",
    "application/x-parquet": "parquet",
}


def invocation_format(content_type: str | None) -> str:
    """``"json"``, ``"csv"`` or ``"parquet"`` for an ``/invocations`` Content-Type, or raise
    `InputError` 415 naming the supported types. No header at all is JSON (curl -d sends a
    form type, clients of the JSON protocol often send none); like MLflow's scoring server,
    only the ``charset`` parameter is understood and only UTF-8."""
    if not content_type or not content_type.strip():
        return "json"
    mime, *params = (p.strip() for p in content_type.split(";"))
    pairs = dict(p.partition("=")[::2] for p in params if p)
    supported = sorted(INVOCATION_CONTENT_TYPES)
    if mime.lower() not in INVOCATION_CONTENT_TYPES:
        raise InputError(
            415,
            f"unsupported Content-Type {_clip(content_type)!r}; /invocations accepts {supported}",
        )
    unknown = sorted(set(pairs) - {"charset"})
    if unknown:
        raise InputError(
            415, f"unrecognized Content-Type parameters {[_clip(u, 30) for u in unknown]}"
        )
    if pairs.get("charset", "utf-8").strip('"').lower() != "utf-8":
        raise InputError(415, "only charset=utf-8 is supported")
    return INVOCATION_CONTENT_TYPES[mime.lower()]


def parse_csv(body: bytes) -> Any:
    """A DataFrame from a CSV body with a header row (``DataFrame.to_csv(index=False)``)."""
    import io

    import pandas as pd

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(400, f"CSV body is not valid UTF-8 ({_clip(str(exc))})") from None
    if not text.strip():
        raise InputError(400, "empty CSV body; expected a header row of feature names and rows")
    try:
        return pd.read_csv(io.StringIO(text))
    except Exception as exc:  # pandas raises several parser error types
        raise InputError(
            400,
            "failed to parse the body as CSV (expected a header row of feature names, as "
            f"DataFrame.to_csv(index=False) writes): {_clip(str(exc), 160)}",
        ) from None


def parse_parquet(body: bytes) -> Any:
    """A DataFrame from a parquet body (``DataFrame.to_parquet()``)."""
    import io

    import pandas as pd

    if not body:
        raise InputError(400, "empty parquet body; expected DataFrame.to_parquet() bytes")
    try:
        return pd.read_parquet(io.BytesIO(body))
    except Exception as exc:  # pyarrow raises several error types for a bad file
        raise InputError(
            400,
            "failed to read the body as parquet (expected DataFrame.to_parquet() bytes): "
            f"{_clip(str(exc), 160)}",
        ) from None


def frame_to_matrix(
    frame: Any,
    feature_names: list[str],
    max_rows: int,
    max_abs: float = FLOAT32_MAX,
    strings: Sequence[int] = (),
) -> np.ndarray:
    """The (n, k) float matrix of a DataFrame whose columns are exactly ``feature_names`` (any
    order), or raise `InputError`; the same bounds as `to_matrix`, checked column-wise. With
    string columns (``strings``) the object matrix of `mixed_matrix`."""
    columns = [str(c) for c in frame.columns]
    if set(columns) != set(feature_names) or len(columns) != len(feature_names):
        missing = [n for n in feature_names if n not in set(columns)]
        extra = sorted(set(columns) - set(feature_names))
        raise InputError(
            422,
            f"columns do not match the model: missing {missing[:10]}; unknown "
            f"{[_clip(e, 40) for e in extra[:10]]}. Expected exactly: {feature_names}",
        )
    n = len(frame)
    if n == 0:
        raise InputError(422, "empty batch: send at least one row")
    if n > max_rows:
        raise InputError(
            413, f"batch of {n} rows is over the maximum of {max_rows} rows per request"
        )
    frame = frame.set_axis(columns, axis=1)
    if strings:
        return mixed_matrix(
            frame[feature_names].to_numpy(dtype=object).tolist(), feature_names, strings, max_abs
        )
    for name in feature_names:
        kind = frame[name].dtype.kind
        if kind not in "iuf":
            raise InputError(
                422, f"column {name!r} holds {frame[name].dtype} values; expected numbers"
            )
    arr = frame[feature_names].to_numpy(dtype=np.float64)
    _check_bounds(
        arr, max_abs, lambda j: f"column {feature_names[j]!r}", "NaN, empty cells and infinity"
    )
    return arr


def _check_bounds(X: np.ndarray, max_abs: float, column, refused: str) -> None:
    """Raise `InputError` 422 naming the first cell of float matrix ``X`` that is not a finite
    number of magnitude at most ``max_abs`` (``column(j)`` names its column)."""
    bad = ~(np.abs(X) <= max_abs)  # NaN too
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise InputError(
            422,
            f"row {i}, {column(j)}: {float(X[i, j])!r} is not a finite number of magnitude at "
            f"most {max_abs:.7g} ({refused} are refused)",
        )


# ---- .npy bodies on /predict -----------------------------------------------------------------
NPY_CONTENT_TYPE = "application/x-npy"


def is_npy(content_type: str | None) -> bool:
    """Whether a ``/predict`` body is a ``.npy`` array (``Content-Type: application/x-npy``);
    any other type is read as JSON, as before."""
    return bool(content_type) and content_type.split(";")[0].strip().lower() == NPY_CONTENT_TYPE


def parse_npy(body: bytes, max_rows: int) -> np.ndarray:
    """The array of a ``.npy`` body (``numpy.save`` of rows x features, or one row), or raise
    `InputError`. Read from its header and the raw bytes after it, never through
    ``numpy.load``: no pickle (object arrays are refused), and the shape is checked against
    the body's length and ``max_rows`` before any memory is taken for it."""
    import io

    from numpy.lib import format as npy_format

    expected = (
        "expected a .npy file (numpy.save) of a 2-D array of numbers, rows x features, "
        "little-endian"
    )
    fp = io.BytesIO(body)
    try:
        # numpy's own header reader: a literal-only parse of a bounded header, its shape a
        # tuple of ints; it reads no data.
        version = npy_format.read_magic(fp)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]}")
        read_header = (
            npy_format.read_array_header_1_0
            if version == (1, 0)
            else npy_format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(fp, max_header_size=4096)
    except Exception as exc:
        raise InputError(
            400, f"body is not a readable .npy file ({_clip(str(exc))}); {expected}"
        ) from None
    if dtype.kind not in "iuf" or dtype.byteorder == ">":
        raise InputError(
            422, f".npy data type {_clip(dtype.str)!r} is not a little-endian number; {expected}"
        )
    if len(shape) not in (1, 2):
        raise InputError(422, f".npy shape {_clip(repr(shape))} is not 1-D or 2-D; {expected}")
    if len(shape) == 2 and shape[0] > max_rows:
        raise InputError(
            413, f"batch of {shape[0]} rows is over the maximum of {max_rows} rows per request"
        )
    offset = fp.tell()
    count = math.prod(shape)  # exact: numpy's int64 product would wrap for a hostile shape
    if len(body) - offset != count * dtype.itemsize:
        raise InputError(
            400,
            f".npy header says {shape} of {dtype} ({count * dtype.itemsize} bytes) but "
            f"{len(body) - offset} bytes follow it; {expected}",
        )
    arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def npy_matrix(
    arr: np.ndarray,
    feature_names: list[str],
    max_abs: float = FLOAT32_MAX,
    strings: Sequence[int] = (),
) -> np.ndarray:
    """The float matrix of a ``.npy`` body's array (`parse_npy`), under the same bounds as
    `to_matrix`, or raise `InputError`."""
    n_features = len(feature_names)
    if strings:
        raise InputError(
            415,
            f"this model has string columns {[feature_names[j] for j in strings]}; a .npy body "
            "carries numbers only: send JSON",
        )
    X = arr.reshape(1, -1) if arr.ndim == 1 else arr
    if X.shape[0] == 0:
        raise InputError(422, "empty batch: send at least one row")
    if X.shape[1] != n_features:
        raise InputError(
            422,
            f".npy rows have {X.shape[1]} values; the model expects {n_features} features: "
            f"{feature_names}",
        )
    X = X.astype(np.float64)  # a copy: the body's buffer is read-only
    _check_bounds(X, max_abs, lambda j: f"feature {j}", "NaN and infinity")
    return X
