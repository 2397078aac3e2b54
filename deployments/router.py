"""Router: the HTTP ingress. Validates input, picks a slot, calls its ModelServer.

The traffic split lives in memory and is replaced by a follower task that long-polls the
RolloutController; a request never calls the controller or the registry.
"""

import asyncio
import contextlib
import copy
import hmac
import importlib.metadata
import inspect
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayError, RayTaskError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)

from deployments import oip, schemas
from deployments.coalesce import Coalescer
from deployments.records import RecordBuffer
from deployments.routing import (
    TIMING,
    ModelError,
    NoLiveModel,
    StateUnknown,
    TrafficSplit,
    UnknownVersion,
)
from deployments.schemas import InputError
from monitoring.metrics import Metrics
from training.errors import ModelRefused

log = logging.getLogger("ray.serve")

# A model replica that went away under a call: retried once (`Router._sender`).
REPLICA_GONE = (ActorDiedError, ActorUnavailableError, ReplicaUnavailableError)

api = FastAPI(
    title="raymlops",
    description=(
        "Predictions from the registered champion (and a canary challenger), "
        "MLflow scoring protocol, Open Inference Protocol V2, health, model info and admin "
        "routes."
    ),
    version="0.1.0",
    # Served by the Router itself (`Router.openapi_json`): its examples follow the model served.
    openapi_url=None,
)
MLFLOW_VERSION = importlib.metadata.version("mlflow")

# Server-Timing: a prediction request with this header set gets a W3C ``Server-Timing``
# header naming where its time went on the server (ms per stage; README "HTTP API").
TIMING_HEADER = "x-mlops-timing"
# Key of the ASGI scope where `_Stamp` notes when the request reached the Router's app.
_T_ASGI = "mlops.t_asgi"


class _Stamp:
    """ASGI middleware: the time a request reached the Router's app, before FastAPI's
    routing, so Server-Timing can tell FastAPI's share from ours."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        scope[_T_ASGI] = time.perf_counter()
        await self.app(scope, receive, send)


api.add_middleware(_Stamp)


def server_timing(stages: list[tuple[str, float]]) -> str:
    """``name;dur=ms, ...`` (W3C Server-Timing)."""
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in stages)


def _dumps(content: Any) -> bytes:
    """Compact JSON: orjson (a few times faster than json on a 256-row answer), json for what
    orjson refuses (an integer beyond 64 bits)."""
    try:
        return orjson.dumps(content, option=_ORJSON_OPTIONS)
    except TypeError:
        return json.dumps(content, separators=(",", ":")).encode()


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _dumps(content),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _error(status: int, detail: str, **extra: Any) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return _json({"detail": detail, **extra}, status, headers)


def _oip_error(status: int, detail: str, **extra: Any) -> Response:
    """An Open Inference Protocol error: ``{"error": "..."}`` (KServe's and Triton's shape)."""
    headers = {"Retry-After": "1"} if status == 503 else None
    return _json({"error": detail, **extra}, status, headers)


# MLflow's error codes (mlflow.protos.databricks_pb2) by HTTP status, as its scoring server
# answers them; our own "detail" key stays alongside for clients of the earlier shape.
MLFLOW_ERROR_CODES = {
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "RESOURCE_EXHAUSTED",
    415: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}


def _mlflow_error(status: int, detail: str, **extra: Any) -> Response:
    """An ``/invocations`` error in the shape of MLflow's scoring server:
    ``{"error_code": "BAD_REQUEST", "message": "..."}``."""
    code = MLFLOW_ERROR_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    headers = {"Retry-After": "1"} if status == 503 else None
    return _json(
        {"error_code": code, "message": detail, "detail": detail, **extra}, status, headers
    )


def _reencode(response: Response, error) -> Response:
    """An error answer of `_error` (``{"detail", ...}``) in another protocol's shape."""
    body = json.loads(response.body)
    detail = body.pop("detail", "error")
    return error(response.status_code, detail, **body)


def _internal_error(what: str, exc: BaseException, request_id: str | None = None) -> Response:
    """Log ``exc`` with its traceback under a request id and answer a 500 that carries no
    exception text (it may name files, hosts or URIs)."""
    request_id = request_id or uuid.uuid4().hex
    log.error("router: request %s: %s failed unexpectedly", request_id, what, exc_info=exc)
    return _error(
        500,
        f"internal error; the details are in the server log under request id {request_id}",
        request_id=request_id,
    )


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["features"],
                    "properties": {
                        "features": {
                            "description": "One row or many: lists of numbers in the model's "
                            "feature order, or objects keyed by feature name",
                            "oneOf": [
                                {
                                    "type": "array",
                                    "items": {"type": "array", "items": {"type": "number"}},
                                },
                                {"type": "array", "items": {"type": "object"}},
                                {"type": "array", "items": {"type": "number"}},
                                {"type": "object"},
                            ],
                        },
                        "model_version": {"type": "string", "description": "pin a live version"},
                        "routing_key": {"type": "string", "description": "sticky routing key"},
                    },
                },
                "example": {"features": [[17.99, 10.38, 122.8, 1001.0, 0.1184]]},
            },
            schemas.NPY_CONTENT_TYPE: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "numpy.save of a 2-D array of numbers, rows x features",
                }
            },
        },
    }
}

INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "MLflow scoring protocol: exactly one of dataframe_split, "
                    "dataframe_records, instances, inputs",
                },
                "example": {"dataframe_split": {"columns": ["x0", "x1"], "data": [[1.0, 2.0]]}},
            },
            "text/csv": {
                "schema": {"type": "string", "description": "a header row of feature names"},
                "example": "x0,x1\n1.0,2.0\n",
            },
            "application/vnd.apache.parquet": {
                "schema": {"type": "string", "format": "binary"},
            },
        },
    }
}

INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "description": "Open Inference Protocol V2: one 2-D tensor [n, k] in "
                    "feature order, or one tensor [n] per feature (named by the feature)",
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype", "data"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string", "enum": sorted(oip.DATATYPES)},
                                    "data": {"type": "array"},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                        },
                    },
                },
                "example": {
                    "inputs": [
                        {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}
                    ]
                },
            }
        },
    }
}


FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "description": "One {request_id, label}, a list of them, or "
                    '{"feedback": [...]}; for a multi-row request, label is a list',
                },
                "example": {"request_id": "9f1c0d2e...", "label": 1},
            }
        },
    }
}


# ---- the OpenAPI document: every error documented, bearer auth declared, live examples ----
ERROR_SCHEMAS = {
    "detail": {
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string"}},
    },
    "oip": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "mlflow": {
        "type": "object",
        "required": ["error_code", "message"],
        "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
    },
}
STATUS_TEXT = {
    400: "bad body: not JSON (or CSV/parquet), nested too deeply, or a bad tensor",
    401: "missing bearer token",
    403: "invalid token",
    404: "unknown model, or the version asked for is not live",
    408: "the body did not arrive in time",
    409: "the controller refused the change (see the answer)",
    413: "body or batch over the limit",
    415: "unsupported Content-Type (the answer names the supported ones)",
    422: "well-formed but invalid input (wrong features, values out of bounds)",
    500: "the model raised on this input (details in the log under the request id)",
    503: "not ready (no champion routable), overloaded, or a dependency restarting; retry",
}
PREDICTING = [400, 404, 408, 413, 422, 500, 503]
ADMIN = [400, 401, 403, 408, 409, 413, 422, 503]


def _route_errors(path: str, method: str) -> tuple[list[int], str]:
    """The error statuses a route answers, and the shape of its error bodies."""
    if path.startswith("/v2"):
        if method == "post":
            return PREDICTING, "oip"
        if path.startswith("/v2/models"):
            return [404, 503], "oip"
        return ([503] if path == "/v2/health/ready" else []), "oip"
    if path == "/invocations":
        return [*PREDICTING, 415], "mlflow"
    if path == "/predict":
        return [*PREDICTING, 415], "detail"
    if path == "/feedback":
        return [400, 401, 403, 408, 413, 422, 503], "detail"
    if path.startswith("/admin") or path == "/reload":
        return ADMIN, "detail"
    if path in ("/health", "/model-info", "/monitor/status", "/ping"):
        return [503], "detail"
    return [], "detail"


def _security(path: str) -> list[dict[str, list]] | None:
    if path.startswith("/admin") or path in ("/reload", "/feedback"):
        return [{"bearer": []}]
    if path == "/monitor/status":
        return [{}, {"bearer": []}]  # error texts are shown with the admin token only
    return None


def document_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (FastAPI's generated document) with every route's error answers, their body
    shapes, and the bearer scheme of the admin routes and /feedback declared."""
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "admin routes: the admin token; /feedback: the feedback token",
    }
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            statuses, shape = _route_errors(path, method)
            responses = op.setdefault("responses", {})
            for status in statuses:
                responses[str(status)] = {
                    "description": STATUS_TEXT[status],
                    "content": {"application/json": {"schema": ERROR_SCHEMAS[shape]}},
                }
            security = _security(path)
            if security is not None:
                op["security"] = security
    return doc


def _body_example(doc: dict[str, Any], path: str, media: str, example: Any) -> None:
    op = doc.get("paths", {}).get(path, {}).get("post")
    if op is None:
        return
    content = op.get("requestBody", {}).get("content", {})
    if media in content:
        content[media]["example"] = example


# The example value of a string column in the OpenAPI request examples.
STRING_EXAMPLE = "a"


def _infer_example(feature_names: list[str], row: list[Any], strings: set[int]) -> dict:
    """An OIP infer body of ``row``: one 2-D FP64 tensor for a numeric model, one tensor per
    column (BYTES for a string column) when the model has string columns."""
    if not strings:
        k = len(feature_names)
        return {"inputs": [{"name": "input-0", "shape": [1, k], "datatype": "FP64", "data": row}]}
    return {
        "inputs": [
            {"name": n, "shape": [1], "datatype": "BYTES" if j in strings else "FP64", "data": [v]}
            for j, (n, v) in enumerate(zip(feature_names, row, strict=True))
        ]
    }


def fill_examples(
    doc: dict[str, Any],
    feature_names: list[str],
    model_name: str,
    version: str,
    strings: Sequence[int] = (),
) -> dict[str, Any]:
    """``doc`` with request examples a client can send as they are to the model served:
    its feature names and count (a string for a string column, ``strings``: their indices),
    its registered name and live version in OIP paths."""
    text = set(strings)
    row = [STRING_EXAMPLE if j in text else 0.0 for j in range(len(feature_names))]
    _body_example(doc, "/predict", "application/json", {"features": [row]})
    _body_example(
        doc,
        "/invocations",
        "application/json",
        {"dataframe_split": {"columns": feature_names, "data": [row]}},
    )
    csv = ",".join(feature_names) + "\n" + ",".join(str(v) for v in row) + "\n"
    _body_example(doc, "/invocations", "text/csv", csv)
    infer = _infer_example(feature_names, row, text)
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        _body_example(doc, path, "application/json", infer)
    values = {"name": model_name, "version": version}
    for path, operations in doc.get("paths", {}).items():
        if not path.startswith("/v2/models/"):
            continue
        for op in operations.values():
            for param in op.get("parameters", []):
                if param.get("in") == "path" and param.get("name") in values:
                    param["example"] = values[param["name"]]
    return doc


def _unlimited() -> int:
    return 1 << 30


# Values shipped in examples and docs, or guessed first: a deployment that starts with one is
# as open as one without a token.
KNOWN_DEFAULT_TOKENS = frozenset(
    {
        "change-me-admin-token",
        "change-me",
        "changeme",
        "test",
        "token",
        "secret",
        "password",
        "admin",
    }
)
MIN_TOKEN_CHARS = 24


def read_token(env_name: str, value: str | None) -> str | None:
    """The bearer token held in ``env_name`` (``value`` is its content), ``None`` when unset;
    raise ``ValueError`` naming the variable for a well-known default value or a token shorter than
    MIN_TOKEN_CHARS, so the app fails to deploy rather than run with a guessable token."""
    token = (value or "").strip()
    if not token:
        return None
    if token.lower() in KNOWN_DEFAULT_TOKENS:
        raise ValueError(
            f"{env_name} holds a well-known default token ({token!r}); set a random secret of at "
            f"least {MIN_TOKEN_CHARS} characters, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"{env_name} holds a token of {len(token)} characters; at least {MIN_TOKEN_CHARS} "
            "are required (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
        )
    return token


def classify_error(exc: BaseException) -> str | None:
    """The ``mlops_errors`` kind of an exception from a slot call: "overloaded" (503),
    "refused" (503: the version was refused at load), "model_error" (500: the model raised),
    "replica" (503: a replica or the whole deployment is unavailable), or ``None`` for
    anything else (500, unexpected)."""
    if isinstance(exc, BackPressureError):
        return "overloaded"
    # Before RayTaskError: the error Ray hands back from the replica is also a ModelRefused.
    if isinstance(exc, ModelRefused):
        return "refused"
    if isinstance(exc, (RayTaskError, ModelError)):
        return "model_error"
    # Serve's own "unavailable" errors are not RayErrors: a deployment that failed to deploy
    # or a replica that went away while chosen.
    if isinstance(exc, (RayError, DeploymentUnavailableError, ReplicaUnavailableError)):
        return "replica"
    return None


LABEL_SOURCE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Keys whose string values are exception text in controller and monitor answers: shown to
# admins, replaced for everyone else (a traceback names files, hosts and URIs).
_ERROR_KEYS = frozenset({"error", "last_error", "exception", "traceback"})
REDACTED = "redacted: send the admin token for details"


def redact_errors(value: Any) -> Any:
    """``value`` with every string under an error key replaced by REDACTED."""
    if isinstance(value, dict):
        return {
            k: REDACTED if k in _ERROR_KEYS and isinstance(v, str) and v else redact_errors(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_errors(v) for v in value]
    return value


METRICS_FLUSH_S = 1.0  # counts and latencies reach Ray's metrics at most this late
ROUTER_METRICS = [
    "mlops_requests",
    "mlops_errors",
    "mlops_predictions",
    "mlops_request_latency_ms",
    "mlops_records_dropped",
    "mlops_feedback",
]


# Two replicas by default: a router that dies (or is replaced) leaves the other answering while
# Serve starts a new one; each is a process of about 250 MB, and mostly waits on I/O.
@serve.deployment(num_replicas=2, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Router:
    """Ingress deployment; see module docstring."""

    async def __init__(self, blue, green, controller, monitor, args: dict[str, Any]):
        # Tokens first: a weak one must fail the deployment before anything else starts.
        admin_env, feedback_env = args["admin_token_env"], args["feedback_token_env"]
        self._token = read_token(admin_env, os.environ.get(admin_env))
        self._feedback_token = read_token(feedback_env, os.environ.get(feedback_env))
        if self._token is not None and self._token == self._feedback_token:
            raise ValueError(
                f"{feedback_env} equals {admin_env}: the feedback token must be a credential "
                "of its own (a label source must not hold admin rights)"
            )
        self._slots = {"blue": blue, "green": green}
        # (slot, version) pairs a replica reported loaded since this router started: readiness
        # waits for the champion's once, at start, not again while a replica restarts.
        self._seen_loaded: set[tuple[str, str]] = set()
        self._controller = controller
        self._monitor = monitor
        self._args = args
        self._limits = args["limits"]
        self._state: dict[str, Any] | None = None
        self._openapi_base: dict[str, Any] | None = None  # built on the first /openapi.json
        self._registry_unknown = False  # the controller answers StateUnknown: MLflow is down
        self._split = TrafficSplit.from_state({}, {})
        self._shadow: tuple[str, str] | None = None  # (slot, version) of a shadowed challenger
        self._shadow_fraction = float(args["rollout"]["shadow_fraction"])
        self._records = RecordBuffer(
            args["records"]["buffer_capacity"], args["records"]["buffer_bytes"]
        )
        coalescing = args["coalescing"]
        self._coalescers = {
            slot: Coalescer(
                self._sender(slot),
                self._call_limit(slot, coalescing["calls_per_replica"])
                if coalescing["enabled"]
                else _unlimited,  # every request its own call, sent at once
                max_rows=args["max_batch_rows"],
            )
            for slot in self._slots
        }
        self._metrics = Metrics.create(ROUTER_METRICS)
        self._background: set[asyncio.Task] = set()
        try:
            self._apply(await controller.poll.remote(-1, 0))
        except Exception:
            log.exception("router: controller not reachable yet; following in the background")
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow()),
            loop.create_task(self._flush_records()),
            loop.create_task(self._metrics.keep_alive(METRICS_FLUSH_S)),
        ]

    # ---- state following -----------------------------------------------------------------
    def _apply(self, state: dict[str, Any]) -> None:
        # Once per state, not per request: which of each version's columns take strings.
        for info in (state.get("versions") or {}).values():
            info["string_columns"] = schemas.string_columns(info)
        self._split = TrafficSplit.from_state(state["slots"], state["weights"])
        ro = state.get("rollout")
        self._shadow = (ro["slot"], ro["version"]) if ro and self._shadow_fraction > 0 else None
        self._state = state

    async def _follow(self) -> None:
        while True:
            try:
                epoch = self._state["epoch"] if self._state else -1
                # ``held``: a controller restarted while MLflow is down can adopt what we
                # route by (confirmed by the replicas) instead of leaving new routers at 503.
                self._apply(await self._controller.poll.remote(epoch, held=self._state))
                self._registry_unknown = False
            except Exception as exc:
                # Whatever failed, the last applied state stays: never route by nothing.
                if isinstance(exc, StateUnknown):  # Ray's error is an instance of the cause
                    # A controller restarted while MLflow is down: /health says so.
                    self._registry_unknown = True
                    log.warning("router: the controller has no state yet; keeping ours (%s)", exc)
                else:
                    log.exception("router: polling the controller failed; retrying")
                await asyncio.sleep(1.0)

    # ---- calls to the slots ----------------------------------------------------------------
    def _sender(self, slot: str):
        handle = self._slots[slot]

        async def send(version: str, Xs: list[np.ndarray]) -> list[Any]:
            t_send = time.perf_counter()
            try:
                results = await handle.predict_many.remote(version, Xs)
            except REPLICA_GONE as exc:
                # The replica died with the call in flight (Serve re-routes only calls it had
                # not accepted). A prediction is idempotent: send it once more, and Serve
                # picks a live replica of the slot or queues it until one is back.
                log.warning("router: slot %s replica lost mid-call (%r); retrying once", slot, exc)
                results = await handle.predict_many.remote(version, Xs)
            span = (t_send, time.perf_counter())
            for r in results:
                if isinstance(r, dict):
                    r["_call"] = span
            return results

        return send

    def _call_limit(self, slot: str, per_replica: int):
        def limit() -> int:
            replicas = (self._state or {}).get("replicas", {}).get(slot) or 1
            return per_replica * replicas

        return limit

    # ---- records to the drift monitor, off the request path -------------------------------
    def _record(self, record: dict[str, Any]) -> None:
        for reason, n in self._records.add_counted(record).items():
            if n:
                self._metrics.add("mlops_records_dropped", n, (("reason", reason),))

    async def __del__(self) -> None:
        """Serve's graceful stop: one last flush of the records to the monitor, then count
        (metric and log) what could not be sent, so a stopped router's loss is visible."""
        if not hasattr(self, "_records"):  # __init__ refused to start (a weak token)
            return
        conf = self._args["records"]
        try:
            while self._records.pending():
                batch = self._records.take(conf["batch_size"])
                await asyncio.wait_for(self._monitor.ingest.remote(batch), conf["flush_timeout_s"])
        except Exception as exc:
            log.warning("router: last flush of records at stop failed: %r", exc)
        lost = self._records.discard_pending()
        if lost:
            self._metrics.add("mlops_records_dropped", lost, (("reason", "router_stopped"),))
            log.warning("router: stopped with %d records not sent to the monitor", lost)
        with contextlib.suppress(Exception):
            self._metrics.flush()

    async def _flush_records(self) -> None:
        conf = self._args["records"]
        while True:
            await asyncio.sleep(conf["flush_interval_s"])
            while len(self._records):
                batch = self._records.take(conf["batch_size"])
                try:
                    await asyncio.wait_for(
                        self._monitor.ingest.remote(batch), conf["flush_timeout_s"]
                    )
                except Exception as exc:
                    # The monitor is slow or restarting: predictions must not wait for it.
                    self._metrics.add(
                        "mlops_records_dropped", len(batch), (("reason", "monitor_unavailable"),)
                    )
                    log.warning(
                        "router: dropped %d records: monitor unavailable (%r)", len(batch), exc
                    )
                    break

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mirror(self, X: np.ndarray, champion_pred: list, request_id: str) -> None:
        """Shadow: send the same rows to the challenger, keep only agreement."""
        slot, version = self._shadow
        try:
            out = await self._coalescers[slot].submit(version, X)
        except Exception as exc:
            log.warning("router: shadow call to v%s failed: %r", version, exc)
            return
        agree = int(np.sum(np.asarray(out["predictions"]) == np.asarray(champion_pred)))
        self._record(
            {
                "kind": "shadow",
                "request_id": request_id,
                "model_version": version,
                "rows": len(champion_pred),
                "agree": agree,
                "ts": time.time(),
            }
        )

    # ---- helpers -------------------------------------------------------------------------
    def _why_refused(self, version: str, admin: bool = False) -> str:
        """Why ``version`` was refused at load, as the model servers reported it. A loader's
        own exception is shown to admins only (it names files and modules); our refusals
        (no signature, a flavor or format not allowed) say what to do and are shown to all."""
        err = ((self._state or {}).get("load_errors") or {}).get(version)
        if err is None:
            return "see the model server's log"
        if err.get("kind") == "load_failed" and not admin:
            return (
                "the model's loader raised an exception: GET /health with the admin token, or "
                "the model server's log"
            )
        return err.get("reason", "see the model server's log")

    def _champion_refused(self) -> str | None:
        """The champion's version when its slot refused to load it (nothing can serve)."""
        state = self._state
        if not state or not state.get("load_errors"):
            return None
        champion = state.get("champion")
        return champion if champion in state["load_errors"] else None

    def _ready(self) -> bool:
        return self._split.ready and self._champion_refused() is None

    def _champion_loading(self) -> str | None:
        """The slot still loading the champion (no replica of it has reported it loaded since
        this router started), else None. Readiness waits for it once: the first request would
        otherwise wait for the load. None too when the controller does not report loads (an
        older one)."""
        state = self._state
        if not state or state.get("loaded") is None:
            return None
        champion = state.get("champion")
        for slot, version in state["slots"].items():
            if version != champion or (slot, version) in self._seen_loaded:
                continue
            if version in state["loaded"].get(slot, []):
                self._seen_loaded.add((slot, version))
                continue
            return slot
        return None

    def _loading_answer(self, slot: str) -> Response:
        return _error(
            503,
            f"the champion v{self._state['champion']} is still loading in slot {slot}; "
            "retry shortly",
        )

    def _not_ready(self, admin: bool = False) -> Response:
        state = self._state
        if state is None:
            return _error(503, "the rollout controller has not answered yet; retry shortly")
        refused = self._champion_refused()
        if refused is not None:
            return _error(
                503,
                f"champion v{refused} of {state['model_name']!r} cannot be served: "
                f"{self._why_refused(refused, admin)}",
            )
        if state.get("last_error"):
            # The controller's error is exception text (registry URIs, hosts): admins read it
            # in GET /admin/rollout, everyone else gets this.
            return _error(
                503,
                "the rollout controller reports an error and no model is routable; details: "
                "GET /admin/rollout with the admin token, or the controller's log",
            )
        return _error(
            503,
            f"no version of {state['model_name']!r} has alias 'champion' in the MLflow "
            "registry yet: run `make train` (or `python -m training`)",
        )

    def _check_bearer(
        self, request: Request, token: str | None, env_name: str, what: str
    ) -> Response | None:
        if token is None:
            return _error(503, f"{what} disabled: set {env_name} for the app")
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            return _error(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        given = auth[7:].strip().encode("latin-1", "replace")
        if not hmac.compare_digest(given, token.encode()):
            return _error(403, f"invalid {what} token")
        return None

    def _check_admin(self, request: Request) -> Response | None:
        return self._check_bearer(request, self._token, self._args["admin_token_env"], "admin")

    def _is_admin(self, request: Request) -> bool:
        return "authorization" in request.headers and self._check_admin(request) is None

    async def _read(self, request: Request, route: str, limit_key: str) -> bytes:
        """The request's raw body, read no further than the route's byte limit and for no
        longer than ``body_timeout_s``: a client trickling its body holds a router slot only
        that long, whatever Serve's request timeout (a client can switch that one off with
        its x-request-timeout-seconds header)."""
        timeout_s = self._limits["body_timeout_s"]
        try:
            return await asyncio.wait_for(
                schemas.read_body(
                    request.stream(),
                    request.headers.get("content-length"),
                    self._limits[limit_key],
                    route,
                ),
                timeout_s,
            )
        except TimeoutError:
            raise InputError(
                408, f"request body not received within {timeout_s:g} s; send it at once"
            ) from None

    async def _body(self, request: Request, route: str, limit_key: str) -> Any:
        """The request's JSON body (see `_read`)."""
        raw = await self._read(request, route, limit_key)
        return schemas.parse_json(raw, self._limits["max_json_depth"])

    def _count(self, version: str, slot: str, route: str, outcome: str, t0: float) -> None:
        # Summed locally and handed to Ray once a second (Metrics.add): no metric call here.
        tags = (("model_version", version), ("outcome", outcome), ("route", route), ("slot", slot))
        self._metrics.add("mlops_requests", 1, tags)
        if outcome == "ok":
            self._metrics.observe(
                "mlops_request_latency_ms",
                (time.perf_counter() - t0) * 1000,
                (("model_version", version),),
            )

    def _error_kind(self, version: str, kind: str) -> None:
        self._metrics.add("mlops_errors", 1, (("kind", kind), ("model_version", version)))

    async def _run(
        self,
        request: Request,
        route: str,
        rows_of,
        *,
        decode=None,
        build=None,
        error=None,
    ) -> Response | dict[str, Any]:
        """Shared path of every prediction route: read, parse, route, call, record, map errors.

        ``rows_of(payload)`` gives ``(rows, pin, routing key)``; ``decode(raw bytes)`` the
        payload, or an awaitable of it (default: JSON under the depth limit);
        ``build(rows, version info)`` the float matrix (default: `schemas.to_matrix`).
        ``error(status, detail, **extra)`` re-encodes every error answer in a protocol's own
        shape (OIP's ``{"error"}``, MLflow's ``{"error_code", "message"}``)."""
        out = await self._predict_path(
            request, route, rows_of, decode or self._decode_json, build or self._rows_matrix
        )
        if error is not None and isinstance(out, Response) and out.status_code >= 400:
            return _reencode(out, error)
        return out

    def _decode_json(self, raw: bytes) -> Any:
        return schemas.parse_json(raw, self._limits["max_json_depth"])

    def _rows_matrix(self, rows: Any, info: dict[str, Any]) -> np.ndarray:
        return schemas.to_matrix(
            rows,
            info["feature_names"],
            self._args["max_batch_rows"],
            self._limits["max_abs_feature"],
            info["string_columns"],
        )

    async def _predict_path(
        self, request: Request, route: str, rows_of, decode, build
    ) -> Response | dict[str, Any]:
        t0 = time.perf_counter()
        if self._state is None:
            return self._not_ready()
        request_id = uuid.uuid4().hex
        slot = version = "none"
        pin = None
        try:
            raw = await self._read(request, request.url.path, "predict_body_bytes")
            t_read = time.perf_counter()
            payload = decode(raw)
            if inspect.isawaitable(payload):  # a parser run off the event loop
                payload = await payload
            rows, pin, key = rows_of(payload)
            if pin is None:
                pin = schemas.text_field(request.headers.get("x-model-version"), "X-Model-Version")
            if key is None:
                key = schemas.text_field(request.headers.get("x-routing-key"), "X-Routing-Key")
            t_parse = time.perf_counter()
            slot, version = self._split.pick(pin, key)
            if version in (self._state.get("load_errors") or {}):
                # Its replicas refused it at load: 503 with why, before validating against a
                # signature it may not have.
                raise ModelRefused(f"v{version} was refused at load")
            info = self._state["versions"][version]
            t_route = time.perf_counter()
            X = build(rows, info)
            schemas.check_column_types(X, info)
            t_valid = time.perf_counter()
            out = await self._coalescers[slot].submit(version, X)
            t_resumed = time.perf_counter()
        except InputError as exc:
            self._error_kind(version, "bad_input")
            return _error(exc.status, exc.detail)
        except UnknownVersion as exc:
            self._error_kind("none", "bad_input")
            return _error(
                404,
                f"model version {exc.version!r} is not live; live versions: {exc.live}",
                live_versions=exc.live,
            )
        except NoLiveModel:
            return self._not_ready()
        except Exception as exc:
            return self._failed(exc, request_id, route, slot, version, pin is not None, t0)
        call = out.pop("_call", None)
        on_replica = out.pop(TIMING, None)
        latency_ms = (time.perf_counter() - t0) * 1000
        out["request_id"] = request_id
        out["latency_ms"] = round(latency_ms, 3)
        self._count(version, slot, route, "ok", t0)
        self._metrics.add("mlops_predictions", len(X), (("model_version", version),))
        self._record(
            {
                "kind": "request",
                "request_id": request_id,
                "model_version": version,
                "features": X,
                "predictions": out["predictions"],
                "latency_ms": latency_ms,
                "error": None,
                # Pinned requests are answered and metered but left out of the canary
                # analysis: a client choosing the version must not steer a promotion.
                "pinned": pin is not None,
                "ts": time.time(),
            }
        )
        shadow = self._shadow
        if (
            shadow is not None
            and pin is None
            and shadow[1] != version
            and random.random() < self._shadow_fraction
        ):
            self._spawn(self._mirror(X, out["predictions"], request_id))
        if request.headers.get(TIMING_HEADER) and call is not None:
            t_asgi = request.scope.get(_T_ASGI, t0)
            stages = [
                ("asgi", (t0 - t_asgi) * 1000),
                ("read", (t_read - t0) * 1000),
                ("parse", (t_parse - t_read) * 1000),
                ("route", (t_route - t_parse) * 1000),
                ("validate", (t_valid - t_route) * 1000),
                ("queue", (call[0] - t_valid) * 1000),
                ("call", (call[1] - call[0]) * 1000),
            ]
            if on_replica is not None:
                stages += [
                    ("batch", on_replica[0]),
                    ("model", on_replica[1]),
                    ("replica", on_replica[2]),
                ]
            stages += [
                ("resume", (t_resumed - call[1]) * 1000),
                ("record", (time.perf_counter() - t_resumed) * 1000),
            ]
            request.scope[TIMING] = (t_asgi, stages)
        return out

    def _answer(self, request: Request, content: Any) -> Response:
        """A prediction route's 200 answer; with the Server-Timing header when asked for
        (`TIMING_HEADER`): the stages `_predict_path` noted, then encoding and the total."""
        timing = request.scope.get(TIMING)
        if timing is None:
            return _json(content)
        t_encode = time.perf_counter()
        response = _json(content)
        t_asgi, stages = timing
        done = time.perf_counter()
        stages += [("encode", (done - t_encode) * 1000), ("router", (done - t_asgi) * 1000)]
        response.headers["Server-Timing"] = server_timing(stages)
        return response

    def _failed(
        self,
        exc: Exception,
        request_id: str,
        route: str,
        slot: str,
        version: str,
        pinned: bool,
        t0: float,
    ) -> Response:
        """Count, record and answer a slot call that failed. The body never carries the
        exception's text (it is in the log under the request id)."""
        kind = classify_error(exc) or "internal"
        self._error_kind(version, kind)
        self._count(version, slot, route, "error", t0)
        self._record(
            {
                "kind": "request",
                "request_id": request_id,
                "model_version": version,
                "latency_ms": None,
                "error": kind,
                "pinned": pinned,
                "ts": time.time(),
            }
        )
        if kind == "overloaded":
            return _error(503, "overloaded: too many requests queued for the model; retry")
        if kind == "refused":
            return _error(
                503,
                f"model v{version} cannot be served: it was refused at load "
                f"({self._why_refused(version)})",
                request_id=request_id,
            )
        if kind == "replica":
            log.error(
                "router: request %s: slot %s (v%s) unavailable: %r", request_id, slot, version, exc
            )
            return _error(
                503,
                f"model replica unavailable ({type(exc).__name__}); retry",
                request_id=request_id,
            )
        if kind == "model_error":
            cause = exc.cause if isinstance(exc, ModelError) else repr(exc.cause)
            log.error("router: request %s: v%s raised: %s", request_id, version, cause)
            return _error(
                500,
                f"model v{version} failed on this input; the error is in the server log under "
                f"request id {request_id}",
                request_id=request_id,
            )
        return _internal_error(f"/{route} (slot {slot}, v{version})", exc, request_id)

    # ---- routes --------------------------------------------------------------------------
    @api.post("/predict", openapi_extra=PREDICT_BODY)
    async def predict(self, request: Request):
        """Predict one row or many; answers predictions, probabilities and the version used.

        The body is JSON, or with ``Content-Type: application/x-npy`` a ``.npy`` file of rows x
        features (version pin and routing key then in the X-Model-Version and X-Routing-Key
        headers)."""
        if schemas.is_npy(request.headers.get("content-type")):
            max_rows = self._args["max_batch_rows"]
            max_abs = self._limits["max_abs_feature"]
            out = await self._run(
                request,
                "predict",
                lambda arr: (arr, None, None),
                decode=lambda raw: schemas.parse_npy(raw, max_rows),
                build=lambda arr, info: schemas.npy_matrix(
                    arr, info["feature_names"], max_abs, info["string_columns"]
                ),
            )
        else:

            def rows_of(payload):
                rows = schemas.predict_rows(payload)
                pin = schemas.text_field(payload.get("model_version"), "model_version")
                key = schemas.text_field(payload.get("routing_key"), "routing_key")
                return rows, pin, key

            out = await self._run(request, "predict", rows_of)
        if isinstance(out, Response):
            return out
        out["model_name"] = self._state["model_name"]
        return self._answer(request, out)

    @api.post("/invocations", openapi_extra=INVOCATIONS_BODY)
    async def invocations(self, request: Request):
        """MLflow scoring protocol (as `mlflow models serve`): answers {"predictions": [...]}."""

        fmt = "json"

        def decode(raw: bytes) -> Any:
            nonlocal fmt
            fmt = schemas.invocation_format(request.headers.get("content-type"))
            # pandas parses a body of up to the byte limit in a thread: other requests on
            # this router do not wait for it.
            if fmt == "csv":
                return asyncio.to_thread(schemas.parse_csv, raw)
            if fmt == "parquet":
                return asyncio.to_thread(schemas.parse_parquet, raw)
            return self._decode_json(raw)

        def rows_of(payload):
            if fmt != "json":
                return payload, None, None  # a DataFrame
            version = self._split.versions[0] if self._split.ready else None
            names = self._state["versions"][version]["feature_names"] if version else []
            return schemas.invocation_rows(payload, names), None, None

        def build(rows, info):
            if fmt == "json":
                return self._rows_matrix(rows, info)
            return schemas.frame_to_matrix(
                rows,
                info["feature_names"],
                self._args["max_batch_rows"],
                self._limits["max_abs_feature"],
                info["string_columns"],
            )

        out = await self._run(
            request, "invocations", rows_of, decode=decode, build=build, error=_mlflow_error
        )
        if isinstance(out, Response):
            return out
        return self._answer(request, {"predictions": out["predictions"]})

    @api.get("/ping")
    async def ping(self):
        """Readiness as `mlflow models serve` answers it: 200 with an empty body when a
        champion is routable, else 503."""
        if not self._ready():
            return Response(status_code=503, headers={"Retry-After": "1"})
        return Response(status_code=200)

    @api.get("/version")
    async def mlflow_version(self):
        """The MLflow version string (what MLflow's scoring server answers on /version)."""
        return Response(MLFLOW_VERSION, media_type="text/plain")

    # ---- Open Inference Protocol V2 (KServe, Triton, MLServer clients) --------------------
    @api.get("/v2")
    async def oip_server(self):
        """OIP server metadata: name, version, extensions."""
        return _json({"name": api.title, "version": api.version, "extensions": []})

    @api.get("/v2/health/live")
    async def oip_live(self):
        """OIP liveness: 200 while the router answers."""
        return _json({"live": True})

    @api.get("/v2/health/ready")
    async def oip_ready(self):
        """OIP readiness: 200 when a champion is routable, else 503."""
        if not self._ready():
            return _reencode(self._not_ready(), _oip_error)
        loading = self._champion_loading()
        if loading is not None:
            return _reencode(self._loading_answer(loading), _oip_error)
        return _json({"ready": True})

    def _oip_model(self, name: str, version: str | None = None) -> dict[str, Any] | Response:
        """The version info an OIP model route is about (``version``, else the champion), or
        the error answer: 503 not ready, 404 another model or a version that is not live."""
        state = self._state
        if state is None or not self._split.ready:
            return _reencode(self._not_ready(), _oip_error)
        if name != state["model_name"]:
            return _oip_error(
                404, f"unknown model {name[:100]!r}; this server serves {state['model_name']!r}"
            )
        live = sorted(self._split.by_version)
        if version is None:
            version = state.get("champion") or self._split.versions[0]
        if version not in self._split.by_version or version not in state["versions"]:
            return _oip_error(
                404,
                f"version {version[:64]!r} of {name!r} is not live; live versions: {live}",
                live_versions=live,
            )
        return state["versions"][version]

    def _oip_metadata(self, name: str, version: str | None) -> Response:
        info = self._oip_model(name, version)
        if isinstance(info, Response):
            return info
        live = sorted(self._split.by_version)
        return _json(oip.model_metadata(name, live, info, oip.platform_of(info)))

    def _oip_model_ready(self, name: str, version: str | None) -> Response:
        info = self._oip_model(name, version)
        if isinstance(info, Response):
            return info
        return _json({"name": name, "ready": True})

    @api.get("/v2/models/{name}")
    async def oip_model(self, name: str):
        """OIP model metadata: live versions, platform, input and output tensors."""
        return self._oip_metadata(name, None)

    @api.get("/v2/models/{name}/ready")
    async def oip_model_ready(self, name: str):
        """OIP model readiness: 200 when the model has a routable version."""
        return self._oip_model_ready(name, None)

    @api.get("/v2/models/{name}/versions/{version}")
    async def oip_version(self, name: str, version: str):
        """OIP metadata of one live version."""
        return self._oip_metadata(name, version)

    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def oip_version_ready(self, name: str, version: str):
        """OIP readiness of one version: 200 when it is live."""
        return self._oip_model_ready(name, version)

    @api.post("/v2/models/{name}/infer", openapi_extra=INFER_BODY)
    async def oip_infer(self, name: str, request: Request):
        """OIP inference through the canary split (routing key: header X-Routing-Key)."""
        return await self._oip_infer(request, name, None)

    @api.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=INFER_BODY)
    async def oip_infer_version(self, name: str, version: str, request: Request):
        """OIP inference pinned to one live version (404 when it is not live)."""
        return await self._oip_infer(request, name, version)

    async def _oip_infer(self, request: Request, name: str, version: str | None) -> Response:
        state = self._state
        if state is not None and name != state["model_name"]:
            return _oip_error(
                404, f"unknown model {name[:100]!r}; this server serves {state['model_name']!r}"
            )
        parsed: list[oip.InferRequest] = []

        def decode(raw: bytes) -> tuple[Any, bytes]:
            header = request.headers.get("inference-header-content-length")
            head, binary = oip.split_body(raw, header)
            return self._decode_json(head), binary

        def rows_of(body):
            return body, version, None

        def build(body, info):
            payload, binary = body
            known = [*oip.KNOWN_OUTPUTS, *(o["name"] for o in oip.model_outputs(info))]
            parsed.append(
                oip.parse_infer(
                    payload,
                    info["feature_names"],
                    self._args["max_batch_rows"],
                    self._limits["max_abs_feature"],
                    list(dict.fromkeys(known)),
                    binary,
                    info["string_columns"],
                )
            )
            return parsed[0].X

        out = await self._run(
            request, "v2_infer", rows_of, decode=decode, build=build, error=_oip_error
        )
        if isinstance(out, Response):
            return out
        return self._answer(request, oip.infer_response(name, out, parsed[0], out["request_id"]))

    @api.post("/feedback", openapi_extra=FEEDBACK_BODY)
    async def feedback(self, request: Request):
        """Ground truth for earlier predictions: {request_id, label} or a list of them.

        Needs 'Authorization: Bearer <feedback token>' (labels steer retraining and
        promotion); an optional 'X-Label-Source' header names the label source
        ([A-Za-z0-9_.-], at most 64; default "default") so the monitor can bound one source's
        share of a window. Unknown or expired request ids are counted in the answer, not
        refused."""
        denied = self._check_bearer(
            request, self._feedback_token, self._args["feedback_token_env"], "feedback"
        )
        if denied is not None:
            return denied
        source = request.headers.get("x-label-source", "default")
        if not LABEL_SOURCE.fullmatch(source):
            return _error(
                422, "X-Label-Source must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'"
            )
        try:
            body = await self._body(request, "/feedback", "feedback_body_bytes")
            items = schemas.feedback_items(body)
        except InputError as exc:
            return _error(exc.status, exc.detail)
        try:
            counts = await self._monitor.feedback.remote(items, source=source)
        except Exception as exc:
            if classify_error(exc) == "replica":
                log.error("router: monitor unavailable for feedback: %r", exc)
                return _error(503, "drift monitor unavailable (restarting?); retry the feedback")
            # The monitor raised (a RayTaskError) or something else broke: our fault.
            return _internal_error(f"feedback of {len(items)} items", exc)
        for outcome, n in counts.items():
            if n:
                self._metrics.add("mlops_feedback", n, (("outcome", outcome),))
        return _json(counts)

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi_json(self, request: Request):
        """The OpenAPI document, its examples built for the version served now."""
        if self._openapi_base is None:
            app = request.app
            self._openapi_base = document_openapi(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        doc = copy.deepcopy(self._openapi_base)
        state = self._state
        version = (state or {}).get("champion")
        info = (state or {}).get("versions", {}).get(version) if version else None
        if info and info.get("feature_names"):
            fill_examples(
                doc,
                list(info["feature_names"]),
                state["model_name"],
                version,
                info["string_columns"],
            )
        return _json(doc)

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request):
        """Swagger UI over /openapi.json."""
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title=f"{api.title} docs")

    @api.get("/redoc", include_in_schema=False)
    async def redoc(self, request: Request):
        """ReDoc over /openapi.json."""
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}/openapi.json", title=f"{api.title} docs")

    @api.get("/health")
    async def health(self, request: Request):
        """Liveness and readiness: 200 when a champion is loaded and routable, else 503.

        ``load_errors``: versions a model server refused to load, with why (a loader's own
        exception text only with the admin token)."""
        state = self._state
        admin = self._is_admin(request)
        body = {
            "live": True,
            "ready": self._ready(),
            "model_name": state["model_name"] if state else self._args["model_name"],
            "champion": state["champion"] if state else None,
            "slots": state["slots"] if state else {},
            "weights": state["weights"] if state else {},
            # False while the controller cannot reach MLflow: traffic follows the last known
            # state (provisional: rebuilt from what the replicas hold after a restart).
            "registry_reachable": (
                state.get("registry_reachable", True) and not self._registry_unknown
                if state
                else None
            ),
            "provisional": bool(state.get("provisional")) if state else False,
        }
        load_errors = (state or {}).get("load_errors") or {}
        if load_errors:
            body["load_errors"] = {
                v: {
                    "slot": e.get("slot"),
                    "kind": e.get("kind"),
                    "reason": self._why_refused(v, admin),
                }
                for v, e in load_errors.items()
            }
        loading = self._champion_loading() if body["ready"] else None
        if loading is not None:
            body["ready"] = False
            body["detail"] = json.loads(self._loading_answer(loading).body)["detail"]
            return _json(body, 503)
        if not body["ready"]:
            body["detail"] = json.loads(self._not_ready(admin).body)["detail"]
            return _json(body, 503)
        return _json(body)

    @api.get("/model-info")
    async def model_info(self):
        """Registered name, versions per slot, weights, and each version's training record."""
        state = self._state
        if state is None:
            return self._not_ready()
        return _json(
            {
                "model_name": state["model_name"],
                "champion": state["champion"],
                "slots": state["slots"],
                "weights": state["weights"],
                "rollout": state.get("rollout"),
                "versions": state["versions"],
            }
        )

    @api.get("/monitor/status")
    async def monitor_status(self, request: Request):
        """Drift monitor: scores per feature, accuracy, last trigger and why, retraining.

        Error texts (a failed retraining's exception) are shown with the admin token only."""
        try:
            status = await self._monitor.status.remote()
        except (RayError, DeploymentUnavailableError, ReplicaUnavailableError) as exc:
            return _error(503, f"drift monitor unavailable: {type(exc).__name__}")
        return _json(status if self._is_admin(request) else redact_errors(status))

    # ---- admin ---------------------------------------------------------------------------
    async def _admin(self, request: Request, call) -> Response:
        denied = self._check_admin(request)
        if denied is not None:
            return denied
        try:
            body = {}
            if request.method != "GET":
                raw = await self._read(request, request.url.path, "admin_body_bytes")
                # No body (or only whitespace) is an empty request: promote, pause, ...
                if raw.strip():
                    body = schemas.parse_json(raw, self._limits["max_json_depth"])
            if not isinstance(body, dict):
                raise InputError(422, "expected a JSON object")
            result = await call(body)
        except InputError as exc:
            return _error(exc.status, exc.detail)
        except Exception as exc:
            if classify_error(exc) == "replica":
                log.error("router: controller call for %s failed: %r", request.url.path, exc)
                return _error(503, f"rollout controller unavailable ({type(exc).__name__}); retry")
            return _internal_error(f"admin {request.url.path}", exc)
        if isinstance(result, dict) and result.get("error"):
            return _json(result, 409)
        return _json(result)

    @api.post("/reload")
    async def reload(self, request: Request):
        """Admin: resolve alias 'champion' again and move traffic to it once it is loaded."""

        async def call(_body):
            result = await self._controller.reload.remote()
            deadline = time.monotonic() + 5
            # Wait for our own split to show the change, so the caller's next request sees it.
            while (
                result.get("changed")
                and self._state["champion"] != result["champion"]
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.05)
            return result

        return await self._admin(request, call)

    @api.get("/admin/rollout")
    async def rollout_status(self, request: Request):
        """Admin: slots, versions, weights, rollout step, the last analysis, history."""
        return await self._admin(request, lambda _b: self._controller.status.remote())

    @api.post("/admin/rollout")
    async def rollout_start(self, request: Request):
        """Admin: start a canary rollout of {"version": "N"}."""

        async def call(body):
            version = schemas.text_field(body.get("version"), "version", 64)
            if version is None:
                raise InputError(422, 'expected {"version": "<registered version>"}')
            return await self._controller.start_rollout.remote(version)

        return await self._admin(request, call)

    @api.post("/admin/rollout/promote")
    async def rollout_promote(self, request: Request):
        """Admin: promote the challenger now."""
        return await self._admin(
            request,
            lambda b: self._controller.promote.remote(schemas.reason(b, "promoted by an operator")),
        )

    @api.post("/admin/rollout/rollback")
    async def rollout_rollback(self, request: Request):
        """Admin: roll the challenger back now; all traffic to the champion."""
        return await self._admin(
            request,
            lambda b: self._controller.rollback.remote(
                schemas.reason(b, "rolled back by an operator")
            ),
        )

    @api.post("/admin/rollout/pause")
    async def rollout_pause(self, request: Request):
        """Admin: stop the automatic steps (weights stay as they are)."""
        return await self._admin(request, lambda _b: self._controller.set_paused.remote(True))

    @api.post("/admin/rollout/resume")
    async def rollout_resume(self, request: Request):
        """Admin: resume the automatic steps."""
        return await self._admin(request, lambda _b: self._controller.set_paused.remote(False))

    @api.post("/admin/weights")
    async def set_weights(self, request: Request):
        """Admin: set slot weights by hand, e.g. {"blue": 0.8, "green": 0.2}; pauses a rollout."""

        async def call(body):
            # Checked here too (the controller checks again): NaN or infinity saved to the
            # registry would leave no routable slot.
            return await self._controller.set_weights.remote(schemas.weights(body))

        return await self._admin(request, call)
