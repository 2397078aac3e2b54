"""ModelServer: one slot (blue or green) serving exactly one registered version at a time.

Each replica follows the RolloutController: it loads its slot's version by registry URI before
it reports that version as loaded (and, when it starts, before it is ready at all), so traffic
only reaches a slot whose replicas already hold the model.

Any MLflow model the deployment's loading policy allows serves (`training.safe_load`): what a
request gets back follows the model (contract C2 of issue 13): class labels and probabilities
from a classifier that has ``predict_proba``, numbers from a regressor, and whatever a pyfunc
returns (an array, a Series, a DataFrame) as JSON, one entry per input row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from ray import serve

from deployments.routing import TIMING as _TIMING
from deployments.routing import ModelError
from monitoring.metrics import Metrics
from training.errors import PYFUNC, ModelLoadFailed, ModelRefused

log = logging.getLogger("ray.serve")
METRICS_FLUSH_S = 1.0  # pass counts reach Ray's metrics at most this late

# Model passes run on the event loop while they take less than this on average (ms); else
# in the pass thread (`ModelServer._next_pass`).
INLINE_PASS_MS = 2.0


# Classifiers whose predict() is exactly classes_[argmax(predict_proba())], as scikit-learn
# implements them: one pass over the model answers both (a forest's predict() would run every
# tree a second time). Any other estimator gets both calls.
_PROBA_ARGMAX = (
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "DecisionTreeClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
    "LogisticRegression",
)


def _final_estimator(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


# Signature column types -> the dtype a column is cast to before a pyfunc's predict (MLflow's
# schema enforcement refuses, say, float64 values for a ``long`` column).
_COLUMN_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
}


def to_rows(out: Any, n_rows: int) -> list[Any]:
    """A model's output as one JSON-able entry per row (contract C2): numbers, strings or
    bools for a 1-D output, a list per row for a 2-D array, a ``{column: value}`` dict per row
    for a DataFrame of 2+ columns (one column: its plain values)."""
    if isinstance(out, dict):
        out = pd.DataFrame(out)
    if isinstance(out, pd.DataFrame) and out.shape[1] != 1:
        cols = [str(c) for c in out.columns]
        rows: Any = [
            {c: _native(v) for c, v in zip(cols, r, strict=True)} for r in out.itertuples(False)
        ]
    elif isinstance(out, pd.DataFrame):
        rows = [_native(v) for v in out.iloc[:, 0].tolist()]
    elif isinstance(out, (pd.Series, np.ndarray)):
        rows = [_native(v) for v in out.tolist()] if out.dtype.kind == "O" else out.tolist()
    else:
        rows = _native(list(out)) if isinstance(out, (list, tuple)) else out
    if not isinstance(rows, list) or len(rows) != n_rows:
        got = len(rows) if isinstance(rows, list) else type(out).__name__
        raise ValueError(f"the model answered {got} predictions for {n_rows} rows")
    return rows


def _native(v: Any) -> Any:
    """numpy / pandas scalars as Python values (JSON-able); lists and dicts element-wise."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list):
        return [_native(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _native(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _split(model: LoadedModel, X: np.ndarray, sizes: list[int]) -> list[dict[str, Any]]:
    """Run ``model`` on ``X`` once and cut the answer into one dict per request size."""
    pred, proba = model.predict(X)
    rows = to_rows(pred, len(X))
    out, start = [], 0
    for n in sizes:
        answer: dict[str, Any] = {
            "predictions": rows[start : start + n],
            "model_version": model.version,
        }
        if proba is not None:
            answer["probabilities"] = proba[start : start + n].tolist()
        out.append(answer)
        start += n
    return out


class LoadedModel:
    """A loaded version and what it answers; the plain part tests use without Ray.

    ``flavor`` says how it was loaded (`training.safe_load.load_served`): ``sklearn`` and the
    native flavors (lightgbm, xgboost, catboost) hold an estimator, called on the numpy rows
    (classifiers also answer ``predict_proba``; a scikit-learn one whose predict is argmax of
    it, in one pass), or on a DataFrame of named columns when its signature has string
    columns; ``python_function`` holds a `mlflow.pyfunc.PyFuncModel`, called on a
    DataFrame of ``feature_names`` cast to the signature's column types (or an array of the
    signature's tensor dtype and shape)."""

    def __init__(
        self,
        version: str,
        model: Any,
        flavor: str = "sklearn",
        feature_names: list[str] | None = None,
        input_schema: list[dict[str, Any]] | None = None,
    ):
        self.version = version
        self.model = model
        self.flavor = flavor
        self.feature_names = list(feature_names or [])
        self.input_schema = list(input_schema or [])
        self._pyfunc = flavor == PYFUNC
        self._classes = np.asarray(getattr(model, "classes_", []) if not self._pyfunc else [])
        self._proba = len(self._classes) > 0 and callable(getattr(model, "predict_proba", None))
        self._proba_only = (
            self._proba
            and flavor == "sklearn"
            and type(_final_estimator(model)).__name__ in _PROBA_ARGMAX
        )
        self._tensor = len(self.input_schema) == 1 and self.input_schema[0]["type"] == "tensor"
        self._casts = {
            s["name"]: _COLUMN_DTYPES[s["type"]]
            for s in self.input_schema
            if s.get("name") in self.feature_names and s["type"] in _COLUMN_DTYPES
        }
        # A signature with string columns: the router sends an object matrix (str and float
        # cells), and an estimator gets a DataFrame too (a ColumnTransformer selects its
        # columns by name); a numeric model keeps the numpy rows.
        self._strings = any(
            s.get("type") == "string" and s.get("name") in self.feature_names
            for s in self.input_schema
        )

    @property
    def has_probabilities(self) -> bool:
        return self._proba

    def predict(self, X: np.ndarray) -> tuple[Any, np.ndarray | None]:
        """The model's raw answer on rows ``X`` (see `to_rows`) and its class probabilities
        (columns in ``classes_`` order), None where the model has none."""
        if self._pyfunc:
            return self.model.predict(self.model_input(X)), None
        if self._strings:
            X = self.model_input(X)
        if self._proba_only:
            proba = self.model.predict_proba(X)
            return self._classes[np.argmax(proba, axis=1)], proba
        if self._proba:
            return self.model.predict(X), self.model.predict_proba(X)
        return self.model.predict(X), None

    def model_input(self, X: np.ndarray) -> pd.DataFrame | np.ndarray:
        """What a pyfunc's predict (or an estimator with string columns) gets for rows ``X``
        (in ``feature_names`` order): a DataFrame of the named columns cast to the signature's
        types, string columns as ``str`` objects."""
        if self._tensor:
            # A 2-D [-1, k] tensor (`load_version` refuses other shapes): the rows as they are.
            return np.asarray(X).astype(self.input_schema[0]["dtype"], copy=False)
        frame = pd.DataFrame(X, columns=self.feature_names or None)
        for name, dtype in self._casts.items():
            frame[name] = _cast(frame[name], name, dtype)
        return frame


def _cast(col: pd.Series, name: str, dtype: str) -> pd.Series:
    if dtype.startswith("int"):
        values = pd.to_numeric(col)
        if not np.all(np.mod(values, 1) == 0):
            bad = values[np.mod(values, 1) != 0].iloc[0]
            raise ValueError(f"column {name!r} takes integers (the signature), got {bad!r}")
        return values.astype(dtype)
    if dtype == "bool":
        return col.astype(bool)
    return col.astype(dtype)


def load_version(tracking_uri: str, model_name: str, version: str) -> LoadedModel:
    """Describe ``version`` (its signature), then load it as the deployment allows
    (`training.safe_load.load_served`). Raises `ModelRefused` (or its `ModelLoadFailed`) for
    a version this deployment does not serve; registry errors propagate (retried)."""
    from training import registry, safe_load

    registry.use_tracking_uri(tracking_uri)
    info = registry.version_info(registry.get_client(tracking_uri), model_name, version)
    if info.has_signature and not info.feature_names:
        raise ModelRefused(
            f"models:/{model_name}/{version}: its signature names no input columns "
            f"({info.input_schema}); the model servers take rows of named columns, or one "
            "2-D tensor [-1, k]"
        )
    served = safe_load.load_served(
        registry.model_uri(model_name, version),
        # Our own versions name their columns in the feature_names tag.
        require_signature="feature_names" not in info.tags,
    )
    return LoadedModel(
        version,
        served.model,
        flavor=served.flavor,
        feature_names=info.feature_names,
        input_schema=info.input_schema,
    )


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
class ModelServer:
    """Serves the version its slot is assigned; passes carry every call queued (see below)."""

    async def __init__(self, slot: str, controller, args: dict[str, Any]):
        # The router sends numpy rows already in the model's feature order (checked by name
        # against the registered signature), so scikit-learn's "X does not have valid feature
        # names" warning would fire on every call; in a Serve replica each warning goes through
        # the logging system with a stack walk, a third of the replica's CPU at load.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        self._slot = slot
        self._controller = controller
        self._args = args
        self._model: LoadedModel | None = None
        # Versions whose artifact this deployment refuses to load (format, types, estimator
        # class, flavor, no signature, a loader that raised; training.safe_load): version ->
        # why. Not retried: the artifact will not change.
        self._refused: dict[str, str] = {}
        self._refused_kind: dict[str, str] = {}  # version -> "refused" | "load_failed"
        self._load_lock = asyncio.Lock()
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        self._epoch = -1
        self._max_calls = int(args["batching"]["max_batch_size"])
        # Calls waiting for a model pass, and whether a pass is scheduled (`_schedule_pass`).
        self._queue: deque[tuple[list[np.ndarray], asyncio.Future]] = deque()
        self._pass_scheduled = False
        self._pass_running = False
        self._pass_ms = 0.0
        self._pass_thread = ThreadPoolExecutor(1, thread_name_prefix=f"pass-{slot}")
        self._metrics = Metrics.create(["mlops_model_passes", "mlops_model_pass_requests"])
        self._metrics_task = asyncio.get_running_loop().create_task(
            self._metrics.keep_alive(METRICS_FLUSH_S)
        )
        state = await self._poll(timeout_s=0)
        await self._follow_state(state)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _poll(self, timeout_s: float | None = None) -> dict[str, Any]:
        return await self._controller.poll.remote(
            self._epoch,
            timeout_s,
            self._slot,
            self._replica_id,
            self._model.version if self._model else None,
            refused={
                v: {"kind": self._refused_kind.get(v, "refused"), "reason": why}
                for v, why in self._refused.items()
            },
        )

    async def _follow(self) -> None:
        while True:
            try:
                state = await self._poll()
                await self._follow_state(state)
            except Exception:
                log.exception("slot %s: following the controller failed; retrying", self._slot)
                await asyncio.sleep(1.0)

    async def _follow_state(self, state: dict[str, Any]) -> None:
        self._epoch = state["epoch"]
        wanted = state["slots"].get(self._slot)
        if wanted is not None and wanted not in self._refused:
            # A refusal is recorded by _ensure. The replica stays up holding what it had and
            # never reports ``wanted`` as loaded, so the controller's wait for the slot fails
            # (a rollout of it is abandoned) while this replica keeps following.
            with contextlib.suppress(ModelRefused):
                await self._ensure(wanted)

    async def _ensure(self, version: str) -> LoadedModel:
        """Load ``version`` unless it is loaded; concurrent callers share one load. Raises
        `ModelRefused` for a version whose artifact this deployment does not load."""
        model = self._model
        if model is not None and model.version == version:
            return model
        async with self._load_lock:
            if version in self._refused:
                raise ModelRefused(self._refused[version])
            if self._model is None or self._model.version != version:
                log.info("slot %s: loading %s v%s", self._slot, self._args["model_name"], version)
                try:
                    loaded = await asyncio.to_thread(
                        load_version,
                        self._args["tracking_uri"],
                        self._args["model_name"],
                        version,
                    )
                except ModelRefused as exc:
                    self._refused[version] = str(exc)[:1000]
                    kind = "load_failed" if isinstance(exc, ModelLoadFailed) else "refused"
                    self._refused_kind[version] = kind
                    log.error("slot %s: refused to load v%s: %s", self._slot, version, exc)
                    raise
                self._model = loaded
                log.info("slot %s: v%s loaded", self._slot, version)
            return self._model

    def load_errors(self) -> dict[str, str]:
        """Versions this replica refused to load, with why (see training.safe_load)."""
        return dict(self._refused)

    async def predict_many(
        self, version: str, Xs: list[np.ndarray]
    ) -> list[dict[str, Any] | ModelError]:
        """Predict each request's rows in ``Xs`` (one router call: one request, or several
        coalesced) with ``version``, loaded on the spot if this replica lags. One result per
        request, in order: a dict, or the `ModelError` of a request the model failed on (the
        others are still answered)."""
        if self._model is None or self._model.version != version:
            await self._ensure(version)
        t_in = time.perf_counter()
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((Xs, fut))
        self._schedule_pass()
        results = await fut
        # Where this call's time went on the replica, for the Router's Server-Timing header
        # (`_TIMING`: ms waiting for the batch's pass, in the pass, in this method).
        t_out = time.perf_counter()
        for r in results:
            if isinstance(r, dict) and "_pass" in r:
                t_pass, t_done = r.pop("_pass")
                r[_TIMING] = (
                    (t_pass - t_in) * 1000,
                    (t_done - t_pass) * 1000,
                    (t_out - t_in) * 1000,
                )
        return results

    # ---- model passes: each carries every call queued when it starts -----------------------
    # A pass runs in the replica's pass thread, so the event loop keeps taking calls while it
    # runs; they queue, and the next pass (right after) carries all of them, up to
    # `max_batch_size` calls. So the batch follows the load with no timer: a call alone is
    # passed two loop turns after it arrives (time for calls ready at once to join it), and
    # under load each pass carries what arrived during the one before. A cheap model's passes
    # (under `INLINE_PASS_MS` on average) run on the loop instead: the thread hand-off and the
    # GIL shared with the loop would cost more than the pass, and the loop is not held long.
    def _schedule_pass(self, turns: int = 2) -> None:
        if not self._pass_scheduled and not self._pass_running:
            self._pass_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_pass, turns)

    def _next_pass(self, turns: int) -> None:
        loop = asyncio.get_running_loop()
        if turns > 1:
            loop.call_soon(self._next_pass, turns - 1)
            return
        self._pass_scheduled = False
        calls: list[tuple[list[np.ndarray], asyncio.Future]] = []
        while self._queue and len(calls) < self._max_calls:
            item = self._queue.popleft()
            if not item[1].done():  # a call cancelled while it waited is dropped
                calls.append(item)
        if not calls:
            return
        batch = [Xs for Xs, _ in calls]
        if self._pass_ms < INLINE_PASS_MS:
            self._answer(calls, self._timed_pass, batch)
            return
        self._pass_running = True
        task = loop.run_in_executor(self._pass_thread, self._timed_pass, batch)
        task.add_done_callback(lambda done: self._answer(calls, done.result))

    def _answer(self, calls, run, *args) -> None:
        """Set each call's future from ``run(*args)`` (one result list per call), then
        schedule the next pass if calls queued meanwhile."""
        self._pass_running = False
        try:
            results = run(*args)
        except Exception as exc:  # not the model's error (that one is per request): all fail
            log.error("slot %s: a model pass failed: %r", self._slot, exc, exc_info=exc)
            for _, fut in calls:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for (_, fut), result in zip(calls, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
            tags = (("slot", self._slot),)
            self._metrics.add("mlops_model_passes", 1, tags)
            self._metrics.add("mlops_model_pass_requests", sum(len(r) for r in results), tags)
        if self._queue:
            self._schedule_pass(turns=1)

    def _timed_pass(self, calls: list[list[np.ndarray]]) -> list[list[Any]]:
        t = time.perf_counter()
        try:
            return self._pass(calls)
        finally:
            # Smoothed pass time: decides whether a lone call runs on the loop (`_next_pass`).
            ms = (time.perf_counter() - t) * 1000
            self._pass_ms = ms if self._pass_ms == 0.0 else 0.8 * self._pass_ms + 0.2 * ms

    def _pass(self, calls: list[list[np.ndarray]]) -> list[list[dict[str, Any] | ModelError]]:
        """One model pass over every request of every call (a call is one router call: one
        request, or several coalesced), answers cut back per call."""
        model = self._model
        requests = [X for Xs in calls for X in Xs]
        t_pass = time.perf_counter()
        try:
            X = requests[0] if len(requests) == 1 else np.concatenate(requests)
            flat = _split(model, X, [len(r) for r in requests])
        except Exception as exc:
            if len(requests) == 1:
                flat = [self._failed(model, requests[0], exc)]
            else:
                # One request's rows broke the merged pass: answer each alone, so only that
                # one fails.
                flat = []
                for r in requests:
                    try:
                        flat.extend(_split(model, r, [len(r)]))
                    except Exception as exc_r:
                        flat.append(self._failed(model, r, exc_r))
        span = (t_pass, time.perf_counter())
        for answer in flat:
            if isinstance(answer, dict):
                answer["_pass"] = span
        out, start = [], 0
        for Xs in calls:
            out.append(flat[start : start + len(Xs)])
            start += len(Xs)
        return out

    def _failed(self, model: LoadedModel, X: np.ndarray, exc: Exception) -> ModelError:
        log.warning("slot %s: v%s failed on %d rows: %r", self._slot, model.version, len(X), exc)
        return ModelError(model.version, repr(exc))

    def loaded_version(self) -> str | None:
        return self._model.version if self._model else None

    def __del__(self):
        for name in ("_task", "_metrics_task"):
            task = getattr(self, name, None)
            if task is not None:
                task.cancel()
        pool = getattr(self, "_pass_thread", None)
        if pool is not None:
            pool.shutdown(wait=False)
