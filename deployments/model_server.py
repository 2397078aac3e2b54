"""ModelServer: one slot (blue or green) serving exactly one registered version at a time.

Each replica follows the RolloutController: it loads its slot's version by registry URI before
it reports that version as loaded (and, when it starts, before it is ready at all), so traffic
only reaches a slot whose replicas already hold the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from typing import Any

import numpy as np
from ray import serve

from deployments.routing import ModelError
from training import registry
from training.safe_load import ModelRefused

log = logging.getLogger("ray.serve")


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


def _split(model: LoadedModel, X: np.ndarray, sizes: list[int]) -> list[dict[str, Any]]:
    """Run ``model`` on ``X`` once and cut the answer into one dict per request size."""
    pred, proba = model.predict(X)
    out, start = [], 0
    for n in sizes:
        out.append(
            {
                "predictions": pred[start : start + n].tolist(),
                "probabilities": proba[start : start + n].tolist(),
                "model_version": model.version,
            }
        )
        start += n
    return out


class LoadedModel:
    """A scikit-learn estimator and what it answers; the plain part tests use without Ray."""

    def __init__(self, version: str, model: Any):
        self.version = version
        self.model = model
        self._classes = np.asarray(getattr(model, "classes_", []))
        self._proba_only = (
            type(_final_estimator(model)).__name__ in _PROBA_ARGMAX and len(self._classes) > 0
        )

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._proba_only:
            proba = self.model.predict_proba(X)
            return self._classes[np.argmax(proba, axis=1)], proba
        return self.model.predict(X), self.model.predict_proba(X)


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
class ModelServer:
    """Serves the version its slot is assigned; batches concurrent requests with serve.batch."""

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
        # class; training.safe_load): version -> why. Not retried: the artifact will not change.
        self._refused: dict[str, str] = {}
        self._load_lock = asyncio.Lock()
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        self._epoch = -1
        batching = args["batching"]
        self._batched.set_max_batch_size(batching["max_batch_size"])
        self._max_wait_s = float(batching["batch_wait_timeout_s"])
        self._wait_s = 0.0
        self._batched.set_batch_wait_timeout_s(0.0)
        self._in_flight = 0
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
                    est = await asyncio.to_thread(
                        registry.load_model,
                        self._args["tracking_uri"],
                        self._args["model_name"],
                        version,
                    )
                except ModelRefused as exc:
                    self._refused[version] = str(exc)
                    log.error("slot %s: refused to load v%s: %s", self._slot, version, exc)
                    raise
                self._model = LoadedModel(version, est)
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
        # Adaptive batch wait: a call alone on the replica runs at once (a fixed wait is pure
        # latency at low load); with others in flight, a batch waits up to the configured
        # timeout for more, since the model call holds the event loop and arrivals otherwise
        # trickle in one per batch.
        self._in_flight += 1
        try:
            wait = self._max_wait_s if self._in_flight > 1 else 0.0
            if wait != self._wait_s:
                self._wait_s = wait
                self._batched.set_batch_wait_timeout_s(wait)
            return await self._batched(Xs)
        finally:
            self._in_flight -= 1

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _batched(
        self, calls: list[list[np.ndarray]]
    ) -> list[list[dict[str, Any] | ModelError]]:
        """One model pass over every request of every call in the batch (a call is one
        router call: one request, or several coalesced), answers cut back per call."""
        model = self._model
        requests = [X for Xs in calls for X in Xs]
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
        task = getattr(self, "_task", None)
        if task is not None:
            task.cancel()
