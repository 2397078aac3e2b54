"""Faults injected on purpose: models that fail or are wrong, registered like real ones."""

from __future__ import annotations

import json

import cloudpickle
import mlflow
import numpy as np
from mlflow.models import infer_signature

import tests.faults as _self


class FlakyModel:
    """Wraps a fitted estimator; raises on a share of calls (a broken model version)."""

    def __init__(self, model, failure_rate: float, seed: int = 0):
        self.model = model
        self.failure_rate = failure_rate
        self.classes_ = model.classes_
        self._rng = np.random.default_rng(seed)

    def _maybe_fail(self):
        if self._rng.random() < self.failure_rate:
            raise RuntimeError("injected fault: this model version fails a share of calls")

    def predict(self, X):
        self._maybe_fail()
        return self.model.predict(X)

    def predict_proba(self, X):
        self._maybe_fail()
        return self.model.predict_proba(X)


class PoisonRowModel:
    """Wraps a fitted estimator; raises on any call whose rows include one with ``POISON`` as
    its first value (one client's bad rows inside a batch merged with other clients' rows)."""

    POISON = -123456.0

    def __init__(self, model):
        self.model = model
        self.classes_ = model.classes_

    def _check(self, X):
        first = X.iloc[:, 0] if hasattr(X, "iloc") else np.asarray(X)[:, 0]
        if (np.asarray(first) == self.POISON).any():
            raise ValueError("injected fault: a poison row")

    def predict(self, X):
        self._check(X)
        return self.model.predict(X)

    def predict_proba(self, X):
        self._check(X)
        return self.model.predict_proba(X)


def register(mlflow_uri: str, name: str, model, X, *, accuracy: float = 0.9) -> str:
    """Log ``model`` and register it with the tags serving needs; returns the version."""
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    # Custom classes travel inside the pickle, so replicas need not import tests/.
    cloudpickle.register_pickle_by_value(_self)
    # A plain scikit-learn model goes in skops, the only format model servers load by default;
    # a wrapper class of this module needs cloudpickle, which a deployment must allow
    # (MLOPS_MODEL_LOADING__ALLOWED_FORMATS / __ALLOWED_ESTIMATORS) to load it.
    plain = type(model).__module__.startswith("sklearn.")
    fmt = (
        mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS
        if plain
        else mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE
    )
    with mlflow.start_run(run_name="injected-fault"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, getattr(model, "model", model).predict(X)),
            serialization_format=fmt,
            pip_requirements=["scikit-learn"],
        )
        mlflow.log_metric("test_accuracy", accuracy)
    tags = {
        "feature_names": json.dumps(list(X.columns)),
        "classes": json.dumps([int(c) for c in model.classes_]),
        "test_accuracy": f"{accuracy:.6f}",
        "family": type(model).__name__,
    }
    return str(mlflow.register_model(info.model_uri, name, tags=tags).version)


class RegistryDown(ConnectionError):
    """Injected: the registry did not answer this call."""


class FaultyRegistryClient:
    """Wraps a real `MlflowClient`; calls for which ``fails(method, args)`` is true raise
    `RegistryDown` instead of reaching the registry (a crash or outage between two writes).

    Every other call goes to the real registry, so what did get written is really there."""

    def __init__(self, client, fails):
        self._client = client
        self.fails = fails
        self.refused: list[tuple[str, tuple]] = []

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.fails(name, args):
                self.refused.append((name, args))
                raise RegistryDown(f"injected fault: {name}{args!r} did not reach the registry")
            return attr(*args, **kwargs)

        return call


def fail_writes_of(*keys: str):
    """A ``fails`` predicate for `FaultyRegistryClient`: tag writes whose key is in ``keys``
    ("mlops.rollout", "mlops.rejected", ...) and alias calls whose alias is in ``keys``."""

    def fails(method: str, args: tuple) -> bool:
        if method in ("set_registered_model_tag", "set_model_version_tag"):
            return args[-2] in keys
        if method in ("set_registered_model_alias", "delete_registered_model_alias"):
            return args[1] in keys
        return False

    return fails
