"""Router: the HTTP ingress. Validates input, picks a slot, calls its ModelServer.

The traffic split lives in memory and is replaced by a follower task that long-polls the
RolloutController; a request never calls the controller or the registry.
"""

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError

from deployments import schemas
from deployments.routing import NoLiveModel, TrafficSplit, UnknownVersion
from deployments.schemas import InputError

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


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Router:
    """Ingress deployment; see module docstring."""

    async def __init__(self, blue, green, controller, args: dict[str, Any]):
        self._slots = {"blue": blue, "green": green}
        self._controller = controller
        self._args = args
        self._token = os.environ.get(args["admin_token_env"]) or None
        self._state: dict[str, Any] | None = None
        self._split = TrafficSplit.from_state({}, {})
        try:
            self._apply(await controller.poll.remote(-1, 0))
        except Exception:
            log.exception("router: controller not reachable yet; following in the background")
        self._task = asyncio.get_running_loop().create_task(self._follow())

    # ---- state following -----------------------------------------------------------------
    def _apply(self, state: dict[str, Any]) -> None:
        self._split = TrafficSplit.from_state(state["slots"], state["weights"])
        self._state = state

    async def _follow(self) -> None:
        while True:
            try:
                epoch = self._state["epoch"] if self._state else -1
                self._apply(await self._controller.poll.remote(epoch))
            except Exception:
                log.exception("router: polling the controller failed; retrying")
                await asyncio.sleep(1.0)

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

    async def _infer(
        self, rows: Any, pin: str | None, key: str | None
    ) -> tuple[dict[str, Any], str]:
        slot, version = self._split.pick(pin, key)
        info = self._state["versions"][version]
        X = schemas.to_matrix(rows, info["feature_names"], self._args["max_batch_rows"])
        out = await self._slots[slot].predict.remote(version, X)
        return out, slot

    async def _run(self, request: Request, rows_of) -> Response | dict[str, Any]:
        """Shared path of /predict and /invocations: parse, route, call, map errors."""
        if self._state is None:
            return self._not_ready()
        try:
            payload = schemas.parse_json(await request.body())
            rows, pin, key = rows_of(payload)
            if pin is None:
                pin = request.headers.get("x-model-version")
            if key is None:
                key = request.headers.get("x-routing-key")
            out, _slot = await self._infer(rows, pin, key)
            return out
        except InputError as exc:
            return _error(exc.status, exc.detail)
        except UnknownVersion as exc:
            return _error(
                404,
                f"model version {exc.version!r} is not live; live versions: {exc.live}",
                live_versions=exc.live,
            )
        except NoLiveModel:
            return self._not_ready()
        except BackPressureError:
            return _error(503, "overloaded: too many requests queued for the model; retry")
        except RayError as exc:
            log.exception("router: model slot call failed")
            return _error(503, f"model replica unavailable ({type(exc).__name__}); retry")

    # ---- routes --------------------------------------------------------------------------
    @api.post("/predict", openapi_extra=PREDICT_BODY)
    async def predict(self, request: Request):
        """Predict one row or many; answers predictions, probabilities and the version used."""
        t0 = time.perf_counter()

        def rows_of(payload):
            rows = schemas.predict_rows(payload)
            pin = payload.get("model_version")
            key = payload.get("routing_key")
            return rows, None if pin is None else str(pin), None if key is None else str(key)

        out = await self._run(request, rows_of)
        if isinstance(out, Response):
            return out
        out["model_name"] = self._state["model_name"]
        out["request_id"] = uuid.uuid4().hex
        out["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        return _json(out)

    @api.post("/invocations", openapi_extra=INVOCATIONS_BODY)
    async def invocations(self, request: Request):
        """MLflow scoring protocol (as `mlflow models serve`): answers {"predictions": [...]}."""

        def rows_of(payload):
            version = self._split.versions[0] if self._split.ready else None
            names = self._state["versions"][version]["feature_names"] if version else []
            return schemas.invocation_rows(payload, names), None, None

        out = await self._run(request, rows_of)
        if isinstance(out, Response):
            return out
        return _json({"predictions": out["predictions"]})

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
                "versions": state["versions"],
            }
        )

    @api.post("/reload")
    async def reload(self, request: Request):
        """Admin: resolve alias 'champion' again and move traffic to it once it is loaded."""
        denied = self._check_admin(request)
        if denied is not None:
            return denied
        result = await self._controller.reload.remote()
        if result.get("error"):
            return _json(result, 503)
        # Wait for our own split to show the change, so the caller's next request sees it.
        deadline = time.monotonic() + 5
        while (
            result.get("changed")
            and self._state["champion"] != result["champion"]
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        return _json(result)
