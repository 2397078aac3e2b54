"""Router: the HTTP ingress. Validates input, picks a slot, calls its ModelServer.

The traffic split lives in memory and is replaced by a follower task that long-polls the
RolloutController; a request never calls the controller or the registry.
"""

import asyncio
import hmac
import json
import logging
import os
import random
import time
import uuid
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError

from deployments import schemas
from deployments.coalesce import Coalescer
from deployments.records import RecordBuffer
from deployments.routing import ModelError, NoLiveModel, TrafficSplit, UnknownVersion
from deployments.schemas import InputError
from monitoring.metrics import Metrics

log = logging.getLogger("ray.serve")

api = FastAPI(
    title="raymlops",
    description=(
        "Predictions from the registered champion (and a canary challenger), "
        "MLflow scoring protocol, health, model info and admin routes."
    ),
    version="0.1.0",
)


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(content, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _error(status: int, detail: str, **extra: Any) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return _json({"detail": detail, **extra}, status, headers)


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
            }
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
                "example": {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}},
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


def _unlimited() -> int:
    return 1 << 30


METRICS_FLUSH_S = 1.0  # counts and latencies reach Ray's metrics at most this late
ROUTER_METRICS = [
    "mlops_requests",
    "mlops_errors",
    "mlops_predictions",
    "mlops_request_latency_ms",
    "mlops_records_dropped",
    "mlops_feedback",
]


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Router:
    """Ingress deployment; see module docstring."""

    async def __init__(self, blue, green, controller, monitor, args: dict[str, Any]):
        self._slots = {"blue": blue, "green": green}
        self._controller = controller
        self._monitor = monitor
        self._args = args
        self._token = os.environ.get(args["admin_token_env"]) or None
        self._state: dict[str, Any] | None = None
        self._split = TrafficSplit.from_state({}, {})
        self._shadow: tuple[str, str] | None = None  # (slot, version) of a shadowed challenger
        self._shadow_fraction = float(args["rollout"]["shadow_fraction"])
        self._records = RecordBuffer(args["records"]["buffer_capacity"])
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
        self._split = TrafficSplit.from_state(state["slots"], state["weights"])
        ro = state.get("rollout")
        self._shadow = (ro["slot"], ro["version"]) if ro and self._shadow_fraction > 0 else None
        self._state = state

    async def _follow(self) -> None:
        while True:
            try:
                epoch = self._state["epoch"] if self._state else -1
                self._apply(await self._controller.poll.remote(epoch))
            except Exception:
                log.exception("router: polling the controller failed; retrying")
                await asyncio.sleep(1.0)

    # ---- calls to the slots ----------------------------------------------------------------
    def _sender(self, slot: str):
        handle = self._slots[slot]

        async def send(version: str, Xs: list[np.ndarray]) -> list[Any]:
            return await handle.predict_many.remote(version, Xs)

        return send

    def _call_limit(self, slot: str, per_replica: int):
        def limit() -> int:
            replicas = (self._state or {}).get("replicas", {}).get(slot) or 1
            return per_replica * replicas

        return limit

    # ---- records to the drift monitor, off the request path -------------------------------
    def _record(self, record: dict[str, Any]) -> None:
        if self._records.add(record):
            self._metrics.add("mlops_records_dropped", 1, (("reason", "buffer_full"),))

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
    def _not_ready(self) -> Response:
        state = self._state
        if state is None:
            return _error(503, "the rollout controller has not answered yet; retry shortly")
        reason = state.get("last_error") or (
            f"no version of {state['model_name']!r} has alias 'champion' in the MLflow "
            "registry yet: run `make train` (or `python -m training`)"
        )
        return _error(503, reason)

    def _check_admin(self, request: Request) -> Response | None:
        if self._token is None:
            return _error(
                503, f"admin API disabled: set {self._args['admin_token_env']} for the app"
            )
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            return _error(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(auth[7:].strip().encode(), self._token.encode()):
            return _error(403, "invalid admin token")
        return None

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

    async def _run(self, request: Request, route: str, rows_of) -> Response | dict[str, Any]:
        """Shared path of /predict and /invocations: parse, route, call, record, map errors."""
        t0 = time.perf_counter()
        if self._state is None:
            return self._not_ready()
        slot = version = "none"
        try:
            payload = schemas.parse_json(await request.body())
            rows, pin, key = rows_of(payload)
            if pin is None:
                pin = request.headers.get("x-model-version")
            if key is None:
                key = request.headers.get("x-routing-key")
            slot, version = self._split.pick(pin, key)
            info = self._state["versions"][version]
            X = schemas.to_matrix(rows, info["feature_names"], self._args["max_batch_rows"])
            out = await self._coalescers[slot].submit(version, X)
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
        except (BackPressureError, RayError, ModelError) as exc:
            if isinstance(exc, BackPressureError):
                kind = "overloaded"
            elif isinstance(exc, (RayTaskError, ModelError)):
                kind = "model_error"  # the model itself raised: a server fault, not the input
            else:
                kind = "replica"
            self._error_kind(version, kind)
            self._count(version, slot, route, "error", t0)
            self._record(
                {
                    "kind": "request",
                    "request_id": uuid.uuid4().hex,
                    "model_version": version,
                    "latency_ms": None,
                    "error": kind,
                    "ts": time.time(),
                }
            )
            if kind == "overloaded":
                return _error(503, "overloaded: too many requests queued for the model; retry")
            if kind == "model_error":
                log.error("router: v%s raised: %s", version, exc)
                cause = exc.cause if isinstance(exc, ModelError) else repr(exc.cause)
                return _error(500, f"model v{version} failed on this input: {cause}")
            log.error("router: slot %s (v%s) call failed: %r", slot, version, exc)
            return _error(503, f"model replica unavailable ({type(exc).__name__}); retry")
        request_id = uuid.uuid4().hex
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
        return out

    # ---- routes --------------------------------------------------------------------------
    @api.post("/predict", openapi_extra=PREDICT_BODY)
    async def predict(self, request: Request):
        """Predict one row or many; answers predictions, probabilities and the version used."""

        def rows_of(payload):
            rows = schemas.predict_rows(payload)
            pin = payload.get("model_version")
            key = payload.get("routing_key")
            return rows, None if pin is None else str(pin), None if key is None else str(key)

        out = await self._run(request, "predict", rows_of)
        if isinstance(out, Response):
            return out
        out["model_name"] = self._state["model_name"]
        return _json(out)

    @api.post("/invocations", openapi_extra=INVOCATIONS_BODY)
    async def invocations(self, request: Request):
        """MLflow scoring protocol (as `mlflow models serve`): answers {"predictions": [...]}."""

        def rows_of(payload):
            version = self._split.versions[0] if self._split.ready else None
            names = self._state["versions"][version]["feature_names"] if version else []
            return schemas.invocation_rows(payload, names), None, None

        out = await self._run(request, "invocations", rows_of)
        if isinstance(out, Response):
            return out
        return _json({"predictions": out["predictions"]})

    @api.post("/feedback", openapi_extra=FEEDBACK_BODY)
    async def feedback(self, request: Request):
        """Ground truth for earlier predictions: {request_id, label} or a list of them.

        Unknown or expired request ids are counted in the answer, not refused."""
        try:
            items = schemas.feedback_items(schemas.parse_json(await request.body()))
        except InputError as exc:
            return _error(exc.status, exc.detail)
        try:
            counts = await self._monitor.feedback.remote(items)
        except RayError as exc:
            log.error("router: monitor unavailable for feedback: %r", exc)
            return _error(503, "drift monitor unavailable (restarting?); retry the feedback")
        for outcome, n in counts.items():
            if n:
                self._metrics.add("mlops_feedback", n, (("outcome", outcome),))
        return _json(counts)

    @api.get("/health")
    async def health(self):
        """Liveness and readiness: 200 when a champion is loaded and routable, else 503."""
        state = self._state
        body = {
            "live": True,
            "ready": self._split.ready,
            "model_name": state["model_name"] if state else self._args["model_name"],
            "champion": state["champion"] if state else None,
            "slots": state["slots"] if state else {},
            "weights": state["weights"] if state else {},
        }
        if not self._split.ready:
            body["detail"] = json.loads(self._not_ready().body)["detail"]
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
    async def monitor_status(self):
        """Drift monitor: scores per feature, accuracy, last trigger and why, retraining."""
        try:
            return _json(await self._monitor.status.remote())
        except RayError as exc:
            return _error(503, f"drift monitor unavailable: {type(exc).__name__}")

    # ---- admin ---------------------------------------------------------------------------
    async def _admin(self, request: Request, call) -> Response:
        denied = self._check_admin(request)
        if denied is not None:
            return denied
        try:
            body = schemas.parse_json(await request.body()) if request.method != "GET" else {}
        except InputError:
            body = {}
        if body and not isinstance(body, dict):
            return _error(422, "expected a JSON object")
        try:
            result = await call(body or {})
        except InputError as exc:
            return _error(exc.status, exc.detail)
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
            if "version" not in body:
                raise InputError(422, 'expected {"version": "<registered version>"}')
            return await self._controller.start_rollout.remote(str(body["version"]))

        return await self._admin(request, call)

    @api.post("/admin/rollout/promote")
    async def rollout_promote(self, request: Request):
        """Admin: promote the challenger now."""
        return await self._admin(
            request,
            lambda b: self._controller.promote.remote(b.get("reason", "promoted by an operator")),
        )

    @api.post("/admin/rollout/rollback")
    async def rollout_rollback(self, request: Request):
        """Admin: roll the challenger back now; all traffic to the champion."""
        return await self._admin(
            request,
            lambda b: self._controller.rollback.remote(
                b.get("reason", "rolled back by an operator")
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
            if not body or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in body.values()
            ):
                raise InputError(422, 'expected {"blue": <weight>, "green": <weight>}')
            return await self._controller.set_weights.remote(body)

        return await self._admin(request, call)
