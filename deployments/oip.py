"""Open Inference Protocol V2 (REST): infer requests to a feature matrix, answers to tensors.

The protocol of KServe, Triton and MLServer clients (`tritonclient.http`, `kserve`): a request
carries ``inputs``, a list of tensors ``{name, shape, datatype, data}`` with ``data`` flat or
nested in row-major order. Two layouts reach the same model: one tensor per feature column
(named by the feature, shape ``[n]`` or ``[n, 1]``), or one 2-D tensor ``[n, k]`` in feature
order. Both become the float matrix ``/predict`` builds, under the same bounds (rows per
request, magnitude of a value, finiteness), built with numpy in one pass per tensor. A model
whose signature has string columns takes the column layout, a BYTES tensor per string column,
and gets the object matrix ``/predict`` builds for it (`schemas.mixed_matrix`).

Pure functions, no Ray: every rejection is a `schemas.InputError` (400 for a bad tensor,
413 for too many rows) that the router answers as ``{"error": "..."}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deployments.schemas import (
    FLOAT32_MAX,
    MAX_STRING_CHARS,
    InputError,
    string_cell_ok,
    text_field,
)

FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
NUMERIC_TYPES = FLOAT_TYPES | INT_TYPES
DATATYPES = NUMERIC_TYPES | {"BOOL", "BYTES"}
# At most this many tensors in one request: a column per feature is the widest valid layout.
MAX_TENSORS = 4096
# Output names the router always knows before a prediction; a DataFrame-returning pyfunc adds
# its own column names (from the signature's outputs).
KNOWN_OUTPUTS = ("predictions", "probabilities")

# MLflow signature column types -> OIP datatypes (MLflow's own names, see mlflow.types.DataType).
_SCHEMA_TYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
# numpy dtype names (tensor specs) -> OIP datatypes.
_NUMPY_TYPES = {
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
    "object": "BYTES",
    "str": "BYTES",
}


@dataclass
class InferRequest:
    """A parsed infer body: the feature matrix and what the answer must echo or select."""

    X: np.ndarray
    id: str | None = None
    outputs: list[str] | None = None  # names wanted; None: all
    parameters: dict[str, Any] = field(default_factory=dict)


# ---- metadata -----------------------------------------------------------------------------
def schema_datatype(spec: dict[str, Any]) -> str:
    """The OIP datatype of one signature entry (contract C1), FP64 when unknown."""
    if spec.get("type") == "tensor":
        return _NUMPY_TYPES.get(str(spec.get("dtype")), "BYTES")
    return _SCHEMA_TYPES.get(str(spec.get("type")), "BYTES")


def _tensor_meta(specs: list[dict[str, Any]], default_name: str) -> list[dict[str, Any]]:
    out = []
    for i, spec in enumerate(specs):
        if spec.get("type") == "tensor":
            shape = [int(d) for d in spec.get("shape") or [-1]]
            name = spec.get("name") or (default_name if i == 0 else f"{default_name}_{i}")
        else:
            shape = [-1]
            name = spec.get("name") or f"{default_name}_{i}"
        out.append({"name": str(name), "datatype": schema_datatype(spec), "shape": shape})
    return out


def _values_datatype(values: list[Any]) -> str:
    """OIP datatype of a list of class labels (the ``classes`` of a version)."""
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        return "BOOL"
    if kinds <= {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


def model_inputs(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Input tensors of a version: from its signature, else one FP64 column per feature."""
    specs = info.get("input_schema") or []
    if specs:
        return _tensor_meta(specs, "input")
    return [{"name": n, "datatype": "FP64", "shape": [-1]} for n in info.get("feature_names", [])]


def model_outputs(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Output tensors of a version: ``predictions`` (typed by the task and classes, or by the
    signature's single output) and ``probabilities`` for a classifier with classes; a
    signature with several output columns names one tensor per column."""
    specs = info.get("output_schema") or []
    if len(specs) > 1:
        return _tensor_meta(specs, "output")
    task = info.get("task", "classification")
    classes = info.get("classes") or []
    if specs:
        datatype = schema_datatype(specs[0])
    elif task == "classification" and classes:
        datatype = _values_datatype(classes)
    else:
        datatype = "FP64"
    out = [{"name": "predictions", "datatype": datatype, "shape": [-1]}]
    if task == "classification" and classes:
        out.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes)]})
    return out


def model_metadata(
    name: str, versions: list[str], info: dict[str, Any], platform: str
) -> dict[str, Any]:
    """The ``GET /v2/models/{name}`` answer for the version described by ``info``."""
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": model_inputs(info),
        "outputs": model_outputs(info),
    }


def platform_of(info: dict[str, Any]) -> str:
    """A platform string as KServe names them: ``mlflow_<flavor>`` when the version says."""
    flavor = info.get("flavor") or (info.get("tags") or {}).get("mlops.flavor")
    return f"mlflow_{flavor}" if flavor else "mlflow"


# ---- requests ------------------------------------------------------------------------------
def _bad(detail: str) -> InputError:
    return InputError(400, detail)


# Little-endian numpy dtypes of the binary tensor data extension (Triton's, what tritonclient
# sends by default: ``set_data_from_numpy(..., binary_data=True)``).
_BINARY_DTYPES = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "BOOL": "?",
}


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of an infer body: with the binary tensor data
    extension, header ``Inference-Header-Content-Length`` says how long the JSON part is."""
    if header_length is None:
        return raw, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 < n <= len(raw):
        raise _bad(
            f"Inference-Header-Content-Length {header_length[:20]!r} is not a byte count "
            f"within the body of {len(raw)} bytes"
        )
    return raw[:n], raw[n:]


def _bytes_elements(chunk: bytes, label: str) -> np.ndarray:
    """BYTES tensor data in binary form: each element a 4-byte little-endian length and the
    bytes."""
    out, i = [], 0
    while i < len(chunk):
        if i + 4 > len(chunk):
            raise _bad(f"{label}: binary BYTES data ends inside an element's length")
        n = int.from_bytes(chunk[i : i + 4], "little")
        if i + 4 + n > len(chunk):
            raise _bad(f"{label}: binary BYTES element of {n} bytes runs past the data")
        out.append(chunk[i + 4 : i + 4 + n].decode("utf-8", "replace"))
        i += 4 + n
    return np.asarray(out, dtype=str)


def attach_binary(inputs: list[dict[str, Any]], binary: bytes) -> list[dict[str, Any]]:
    """``inputs`` with the data of every tensor that declares ``parameters.binary_data_size``
    taken from ``binary`` (in the order of ``inputs``) as a numpy array."""
    out, offset = [], 0
    for i, tensor in enumerate(inputs):
        params = tensor.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            out.append(tensor)
            continue
        label = f"input {tensor['name']!r:.60}"
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise _bad(
                f"{label}: binary_data_size {size!r:.20} does not fit the {len(binary)} bytes "
                "of binary data after the JSON header"
            )
        chunk = binary[offset : offset + size]
        offset += size
        datatype = tensor.get("datatype")
        if datatype == "BYTES":
            data = _bytes_elements(chunk, label)
        elif datatype in _BINARY_DTYPES:
            itemsize = np.dtype(_BINARY_DTYPES[datatype]).itemsize
            if size % itemsize:
                raise _bad(f"{label}: {size} bytes is not a whole number of {datatype} values")
            data = np.frombuffer(chunk, dtype=_BINARY_DTYPES[datatype])
        else:
            raise _bad(f"inputs[{i}]: datatype {datatype!r:.40} is not one of {sorted(DATATYPES)}")
        out.append({**tensor, "data": data})
    if offset != len(binary):
        raise _bad(
            f"{len(binary) - offset} bytes of binary data after the JSON header belong to no "
            "input (binary_data_size)"
        )
    return out


def _shape(tensor: dict[str, Any], label: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape:
        raise _bad(f"{label}: shape must be a non-empty list of dimensions, e.g. [2, 30]")
    if not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(f"{label}: shape {shape!r:.80} must hold non-negative integers")
    return shape


def _decode(tensor: dict[str, Any], label: str, shape: list[int], max_cells: int) -> np.ndarray:
    """The tensor's ``data`` as a numpy array of ``shape``, its values checked against its
    declared datatype."""
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise _bad(f"{label}: datatype {datatype!r:.40} is not one of {sorted(DATATYPES)}")
    size = math.prod(shape)
    if size > max_cells:
        raise InputError(
            413, f"{label}: shape {shape} holds {size} values; at most {max_cells} per request"
        )
    data = tensor.get("data")
    if not isinstance(data, (list, np.ndarray)):
        raise _bad(f"{label}: data must be a list (flat or nested, row-major)")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise _bad(
            f"{label}: data is ragged or mixes types; expected {shape} of {datatype}"
        ) from None
    if arr.size != size or (arr.ndim > 1 and list(arr.shape) != shape):
        raise _bad(
            f"{label}: data holds {arr.size} values in shape {list(arr.shape)}, but the tensor "
            f"declares shape {shape} ({size} values)"
        )
    kind = arr.dtype.kind
    if datatype in FLOAT_TYPES:
        ok = kind in "iuf" or size == 0
    elif datatype in INT_TYPES:
        ok = kind in "iu" or size == 0
    elif datatype == "BOOL":
        ok = kind == "b" or size == 0
    else:
        ok = kind in "US" or size == 0
    if not ok:
        found = {
            "b": "booleans",
            "i": "integers",
            "u": "integers",
            "f": "numbers with a fraction",
            "U": "strings",
            "S": "strings",
        }.get(kind, "mixed values")
        raise _bad(f"{label}: datatype {datatype} but data holds {found}")
    return arr.reshape(shape)


def _as_float(arr: np.ndarray, label: str, max_abs: float) -> np.ndarray:
    if arr.dtype.kind not in "iuf":
        raise _bad(
            f"{label}: datatype does not match the model's input: expected a numeric tensor "
            "(FP64, FP32, INT64, INT32, ...)"
        )
    out = arr.astype(np.float64)
    bad = ~(np.abs(out) <= max_abs)  # True for NaN too
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        value = out[at]
        what = "is not a finite number" if not math.isfinite(value) else "is too large"
        raise _bad(
            f"{label}: value {value!r} at index {list(at)} {what}; expected finite numbers of "
            f"magnitude at most {max_abs:.7g}"
        )
    return out


def _check_rows(n: int, max_rows: int) -> None:
    if n == 0:
        raise _bad("empty batch: the tensors hold no rows; send at least one")
    if n > max_rows:
        raise InputError(
            413, f"batch of {n} rows is over the maximum of {max_rows} rows per request"
        )


def _tensors(payload: Any, binary: bytes) -> list[dict[str, Any]]:
    if not isinstance(payload, dict):
        raise _bad(f"expected a JSON object with 'inputs', got {type(payload).__name__}")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad(
            "missing or empty 'inputs': expected a list of tensors "
            '[{"name": ..., "shape": [n, k], "datatype": "FP64", "data": [...]}]'
        )
    if len(inputs) > MAX_TENSORS:
        raise InputError(413, f"{len(inputs)} input tensors; at most {MAX_TENSORS}")
    for i, t in enumerate(inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise _bad(f"inputs[{i}]: expected an object with a string 'name'")
    return attach_binary(inputs, binary)


def _matrix_layout(tensor: dict, k: int, max_rows: int, max_abs: float) -> np.ndarray:
    label = f"input {tensor['name']!r:.60}"
    shape = _shape(tensor, label)
    if len(shape) != 2 or shape[1] != k:
        raise _bad(
            f"{label}: shape {shape} does not fit the model: send one 2-D tensor [n, {k}] in "
            f"feature order, or one tensor per feature of shape [n]"
        )
    _check_rows(shape[0], max_rows)
    return _as_float(_decode(tensor, label, shape, max_rows * k), label, max_abs)


def _as_strings(arr: np.ndarray, label: str) -> np.ndarray:
    """A string column's values (a BYTES tensor) as an object array of ``str``."""
    if arr.dtype.kind not in "US":
        raise _bad(
            f"{label}: the model's signature types this column string: send it as a BYTES "
            "tensor of strings"
        )
    values = arr.astype(str).astype(object)
    for i, v in enumerate(values):
        if not string_cell_ok(v):
            raise _bad(
                f"{label}: element {i} is a string of {len(v)} characters; a string column "
                f"takes valid Unicode strings of at most {MAX_STRING_CHARS} characters"
            )
    return values


def _column_layout(
    inputs: list[dict],
    names: list[str],
    max_rows: int,
    max_abs: float,
    strings: Sequence[int] = (),
) -> np.ndarray:
    given = [t["name"] for t in inputs]
    if len(set(given)) != len(given):
        dup = sorted({n for n in given if given.count(n) > 1})
        raise _bad(f"input tensors named more than once: {dup[:5]}")
    missing = [n for n in names if n not in set(given)]
    unknown = sorted(set(given) - set(names))
    if missing or unknown:
        parts = [f"missing {missing[:10]}"] if missing else []
        parts += [f"unknown {[u[:60] for u in unknown[:10]]}"] if unknown else []
        raise _bad(
            f"input tensors do not match the model's features: {'; '.join(parts)}. Send one "
            f"tensor per feature {names} of shape [n], or one 2-D tensor [n, {len(names)}]"
        )
    by_name = {t["name"]: t for t in inputs}
    text = set(strings)
    columns = []
    n_rows = None
    for j, name in enumerate(names):
        label = f"input {name!r}"
        shape = _shape(by_name[name], label)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise _bad(f"{label}: shape {shape}; a column tensor has shape [n] or [n, 1]")
        if n_rows is None:
            n_rows = shape[0]
            _check_rows(n_rows, max_rows)
        elif shape[0] != n_rows:
            raise _bad(f"{label}: {shape[0]} rows, but the first column has {n_rows}")
        arr = _decode(by_name[name], label, shape, max_rows).reshape(-1)
        if j in text:
            columns.append(_as_strings(arr, label))
        else:
            columns.append(_as_float(arr, label, max_abs))
    if not text:
        return np.column_stack(columns)
    out = np.empty((n_rows, len(names)), dtype=object)
    for j, col in enumerate(columns):
        out[:, j] = col
    return out


def _wanted_outputs(payload: dict, known: list[str]) -> list[str] | None:
    outputs = payload.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise _bad('outputs must be a list of {"name": ...} objects')
    names = [o["name"] for o in outputs]
    unknown = [n[:60] for n in names if n not in known]
    if unknown:
        raise _bad(f"unknown outputs {unknown[:10]}; this model answers {known}")
    return names


def parse_infer(
    payload: Any,
    feature_names: list[str],
    max_rows: int,
    max_abs: float = FLOAT32_MAX,
    known_outputs: list[str] | None = None,
    binary: bytes = b"",
    strings: Sequence[int] = (),
) -> InferRequest:
    """Validate an infer body into the (n, k) float matrix of ``feature_names``, or raise
    `InputError`. A single 2-D tensor whose name is not a feature is the matrix layout;
    otherwise every tensor is a feature column. ``binary``: the bytes after the JSON header
    (binary tensor data extension, see `split_body`). A model with string columns
    (``strings``: their indices) takes the column layout only, a BYTES tensor per string
    column, and gets the object matrix `schemas.mixed_matrix` builds."""
    inputs = _tensors(payload, binary)
    k = len(feature_names)
    one = inputs[0]
    is_matrix = (
        len(inputs) == 1
        and isinstance(one.get("shape"), list)
        and len(one["shape"]) == 2
        and (one["name"] not in feature_names or one["shape"][1] != 1)
    )
    if is_matrix and strings:
        raise _bad(
            f"input {one['name']!r:.60}: this model has string columns "
            f"{[feature_names[j] for j in strings][:10]}; send one tensor per feature of shape "
            "[n] (BYTES for a string column), not one 2-D tensor"
        )
    if is_matrix:
        X = _matrix_layout(one, k, max_rows, max_abs)
    else:
        X = _column_layout(inputs, feature_names, max_rows, max_abs, strings)
    parameters = payload.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _bad("parameters must be an object")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("id must be a string")
    return InferRequest(
        X=X,
        id=text_field(request_id, "id") if request_id is not None else None,
        outputs=_wanted_outputs(payload, known_outputs or list(KNOWN_OUTPUTS)),
        parameters=parameters or {},
    )


# ---- answers -------------------------------------------------------------------------------
def _tensor(name: str, values: list[Any]) -> dict[str, Any]:
    """One output tensor from a JSON-able list (1-D values, or one list per row)."""
    arr = np.asarray(values, dtype=object if _ragged(values) else None)
    kind = arr.dtype.kind
    if kind == "b":
        datatype = "BOOL"
    elif kind in "iu":
        datatype = "INT64"
    elif kind == "f":
        datatype = "FP64"
    else:
        datatype = "BYTES"
    if datatype == "BYTES":
        flat = [v if isinstance(v, str) else str(v) for v in arr.reshape(-1).tolist()]
    else:
        flat = arr.reshape(-1).tolist()
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": flat}


def _ragged(values: list[Any]) -> bool:
    lists = [v for v in values if isinstance(v, list)]
    if not lists:
        return False
    return len(lists) != len(values) or len({len(v) for v in lists}) != 1


def encode_outputs(out: dict[str, Any], wanted: list[str] | None = None) -> list[dict[str, Any]]:
    """The ``outputs`` of an infer answer from a model server's answer (contract C2):
    ``predictions`` (one tensor per column when rows are dicts) and ``probabilities``."""
    predictions = out["predictions"]
    tensors = []
    if predictions and all(isinstance(p, dict) for p in predictions):
        columns = list(dict.fromkeys(c for p in predictions for c in p))
        for c in columns:
            tensors.append(_tensor(str(c), [p.get(c) for p in predictions]))
    else:
        tensors.append(_tensor("predictions", predictions))
    if "probabilities" in out:
        probabilities = np.asarray(out["probabilities"], dtype=np.float64)
        tensors.append(
            {
                "name": "probabilities",
                "datatype": "FP64",
                "shape": list(probabilities.shape),
                "data": probabilities.reshape(-1).tolist(),
            }
        )
    if wanted is not None:
        tensors = [t for t in tensors if t["name"] in wanted]
    return tensors


def infer_response(
    model_name: str, out: dict[str, Any], request: InferRequest, request_id: str
) -> dict[str, Any]:
    """The infer answer: model name and version, the client's ``id`` (else ours, the one
    ``/feedback`` takes), the output tensors."""
    return {
        "model_name": model_name,
        "model_version": str(out["model_version"]),
        "id": request.id if request.id is not None else request_id,
        "outputs": encode_outputs(out, request.outputs),
    }
