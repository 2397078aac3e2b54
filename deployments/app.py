"""`build_app(args)`: the typed application builder that `serve_config.yaml` imports.

The graph is fixed: Router -> ModelServer "blue" / "green", all following one
RolloutController; the Router ships prediction records to one DriftMonitor. Model versions move
through the MLflow registry; this graph, and so `serve_config.yaml` and the RayService
`serveConfigV2`, never change for a rollout.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from configs import (
    DriftConfig,
    RetrainingConfig,
    RolloutConfig,
    TrainingConfig,
    default_tracking_uri,
    load_drift_config,
    load_retraining_config,
    load_rollout_config,
    load_training_config,
)
from deployments.schemas import FLOAT32_MAX


class BatchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(
        32,
        ge=1,
        description="most router calls (each one or more requests) one model pass carries; a "
        "pass carries every call that queued during the one before, with no timer",
    )
    batch_wait_timeout_s: float | None = Field(
        None,
        ge=0,
        description="ignored, kept so that earlier configs still load: passes no longer wait "
        "on a timer (deployments/model_server.py)",
    )


class CoalesceArgs(BaseModel):
    """How a router joins concurrent requests for one slot into shared calls
    (`deployments.coalesce`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="false: every request is its own call to the slot, sent at once"
    )
    calls_per_replica: int = Field(
        4,
        ge=1,
        description="calls in flight per replica of the slot; requests beyond wait and go "
        "together in the next call (Serve's autoscaling counts these calls)",
    )


class RecordsArgs(BaseModel):
    """How routers ship prediction records to the DriftMonitor (off the request path)."""

    model_config = ConfigDict(extra="forbid")

    buffer_capacity: int = Field(20_000, ge=1, description="records held; oldest dropped beyond")
    buffer_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="estimated bytes of records held (features are most of it); oldest "
        "dropped beyond, counted in mlops_records_dropped",
    )
    batch_size: int = Field(1_000, ge=1)
    flush_interval_s: float = Field(0.5, gt=0)
    flush_timeout_s: float = Field(5.0, gt=0)


class LimitsArgs(BaseModel):
    """Bounds on what one request may send; beyond them the router answers 4xx without
    reading further."""

    model_config = ConfigDict(extra="forbid")

    predict_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="largest /predict and /invocations body (1,024 rows of 30 floats as JSON "
        "are about 0.7 MB); beyond: 413",
    )
    feedback_body_bytes: int = Field(1024 * 1024, ge=1024, description="largest /feedback body")
    admin_body_bytes: int = Field(64 * 1024, ge=1024, description="largest admin route body")
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="longest a router waits for a request's whole body (a slow client); "
        "beyond: 408",
    )
    max_json_depth: int = Field(
        32, ge=4, le=500, description="deepest nesting of JSON arrays/objects; beyond: 400"
    )
    max_abs_feature: float = Field(
        FLOAT32_MAX,
        gt=0,
        le=FLOAT32_MAX,
        description="largest magnitude of a feature value; beyond: 422 (tree models cast to "
        "float32 and fail past its range)",
    )


class AppArgs(BaseModel):
    """Arguments of the application (the `args:` of serve_config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = "breast_cancer_classifier"
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: $MLFLOW_TRACKING_URI or .mlflow/ SQLite"
    )
    max_batch_rows: int = Field(1024, ge=1, description="rows allowed in one request")
    admin_token_env: str = Field(
        "MLOPS_ADMIN_TOKEN", description="env var holding the admin bearer token"
    )
    feedback_token_env: str = Field(
        "MLOPS_FEEDBACK_TOKEN",
        description="env var holding the bearer token /feedback requires (unset: /feedback "
        "answers 503); labels steer retraining and promotion, so they need a credential of "
        "their own, not the admin token",
    )
    poll_timeout_s: float = Field(5.0, gt=0, description="long-poll timeout to the controller")
    registry_poll_s: float = Field(5.0, gt=0, description="how often to look for a champion")
    slot_ready_timeout_s: float = Field(120.0, gt=0)
    batching: BatchArgs = BatchArgs()
    coalescing: CoalesceArgs = CoalesceArgs()
    records: RecordsArgs = RecordsArgs()
    limits: LimitsArgs = LimitsArgs()
    rollout: RolloutConfig | None = Field(
        None, description="canary policy; default: configs/rollout.yaml (+ env overrides)"
    )
    drift: DriftConfig | None = Field(None, description="default: configs/drift.yaml")
    retraining: RetrainingConfig | None = Field(
        None, description="default: configs/retraining.yaml"
    )
    training: TrainingConfig | None = Field(
        None, description="search used by retraining; default: configs/training.yaml"
    )


def build_app(args: AppArgs) -> Application:
    """Bind the Serve graph for ``args``."""
    from deployments.controller import RolloutController
    from deployments.model_server import ModelServer
    from deployments.router import Router
    from monitoring.monitor import DriftMonitor

    if isinstance(args, dict):
        args = AppArgs.model_validate(args)
    resolved = args.model_copy(
        update={
            "tracking_uri": args.tracking_uri or default_tracking_uri(),
            "rollout": args.rollout or load_rollout_config(),
            "drift": args.drift or load_drift_config(),
            "retraining": args.retraining or load_retraining_config(),
            # Retraining registers under the app's model name, whatever the YAML says.
            "training": (args.training or load_training_config()).model_copy(
                update={"model_name": args.model_name}
            ),
        }
    )
    conf = resolved.model_dump()
    monitor = DriftMonitor.bind(conf)
    controller = RolloutController.bind(conf, monitor)
    blue = ModelServer.options(name="blue").bind("blue", controller, conf)
    green = ModelServer.options(name="green").bind("green", controller, conf)
    return Router.bind(blue, green, controller, monitor, conf)
