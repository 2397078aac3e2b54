"""DriftMonitor: sliding windows of live traffic and feedback, drift detection, retraining.

A Serve deployment with one replica (like the RolloutController, for the same reasons: Serve
restarts it, deletes it with the app, shows it in `serve status`). Routers send it prediction
records in batches; `/feedback` labels are joined to them by request id. It keeps, per version,
the request / error / latency / accuracy numbers the canary analysis reads, and runs the drift
detectors of `monitoring.core` on a timer. When they fire it runs one retraining Ray task
(Ray Tune inside); a registered challenger is handed to the RolloutController.

Its windows live in memory only: after a restart it starts collecting again (the reference
samples and baselines come back from MLflow).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import ray
from ray import serve

from configs import DriftConfig, TrainingConfig
from deployments.analysis import VersionStats
from monitoring.core import DriftMonitorCore, is_pinned
from monitoring.metrics import Metrics
from monitoring.reference import load_reference, resolve_reference, version_task
from training import registry
from training.recipe import NOT_CONFIGURED, recipe_for

__all__ = ["DriftMonitor", "load_reference", "reference_for", "version_task"]

log = logging.getLogger("ray.serve")

MONITOR_METRICS = [
    "mlops_accuracy",
    "mlops_drift_score",
    "mlops_drift_detected",
    "mlops_retraining_runs",
    "mlops_shadow_agreement",
    "mlops_feedback",
]


@ray.remote(num_cpus=0)
def retraining_task(
    cfg: dict[str, Any],
    tracking_uri: str,
    X: np.ndarray,
    y: np.ndarray,
    trigger: dict[str, Any],
    retraining: dict[str, Any],
) -> dict[str, Any]:
    """One retraining run (Ray Tune inside): see `training.retrain.retrain`."""
    from training.retrain import retrain

    logging.basicConfig(level=logging.INFO)
    result = retrain(
        TrainingConfig.model_validate(cfg),
        tracking_uri,
        X,
        y,
        trigger=trigger,
        margin=retraining["margin"],
        holdout_fraction=retraining["holdout_fraction"],
        recent_weight=retraining["recent_weight"],
        base_data=retraining["base_data"],
        base_tolerance=retraining["base_tolerance"],
        base_min_score=retraining.get("base_min_score"),
        rmse_margin=retraining.get("rmse_margin", 0.05),
        base_rmse_tolerance=retraining.get("base_rmse_tolerance", 0.1),
        base_min_r2=retraining.get("base_min_r2"),
        entry_point=retraining.get("entry_point"),
        entry_point_space=retraining.get("entry_point_space") or {},
    )
    return result.to_dict()


def reference_for(
    client, model_name: str, version: str, min_reference_rows: int = 100
) -> dict[str, Any]:
    """`DriftMonitorCore.set_reference` keyword arguments for ``version``: see
    `monitoring.reference.resolve_reference` (our reference artifact, the logged dataset, the
    input example, else a live reference)."""
    return resolve_reference(client, model_name, version, min_reference_rows)


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class DriftMonitor:
    """See module docstring."""

    async def __init__(self, args: dict[str, Any]):
        self._args = args
        self._drift: dict[str, Any] = args["drift"]
        self._retraining: dict[str, Any] = args["retraining"]
        self._training: dict[str, Any] = args["training"]
        self._client = registry.get_client(args["tracking_uri"])
        self._core = DriftMonitorCore(DriftConfig.model_validate(self._drift))
        self._stats: dict[str, VersionStats] = {}
        self._metrics = Metrics.create(MONITOR_METRICS)
        self._reference_for: str | None = None
        self._reference_source: str | None = None
        self._recipe: str | None = None
        self._retrain_task: asyncio.Task | None = None
        self._last_retraining: dict[str, Any] | None = None
        self._timeline: list[dict[str, Any]] = []
        self._controller = None
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._evaluate_loop())
        self._gauge_task = loop.create_task(self._metrics.keep_alive())

    # ---- ingestion -----------------------------------------------------------------------
    def _version_stats(self, version: str) -> VersionStats:
        stats = self._stats.get(version)
        if stats is None:
            stats = self._stats[version] = VersionStats()
        return stats

    async def ingest(self, records: list[dict[str, Any]]) -> int:
        """Records from routers (see `Router._record`); returns how many were taken.

        Records of requests that pinned their model version (``"pinned": true``) stay out of
        the canary numbers (requests, errors, latency; their labels out of the accuracy test):
        whoever picks the version could otherwise pick the evidence, failing a good challenger
        with inputs that make it raise or flattering a bad one. Their rows still feed the
        drift windows, as any traffic of that version."""
        rows = []
        for rec in records:
            version = rec.get("model_version") or "none"
            if rec.get("kind") == "shadow":
                self._version_stats(version).add_shadow(rec["ts"], rec["rows"], rec["agree"])
                continue
            if not is_pinned(rec):
                self._version_stats(version).add_request(
                    rec["ts"], rec.get("latency_ms") or 0.0, rec.get("error") is not None
                )
            if rec.get("error") is None:
                rows.append(rec)
        if rows:
            self._core.add_records(rows)
        return len(records)

    async def feedback(
        self, items: list[dict[str, Any]], source: str = "default"
    ) -> dict[str, int]:
        """Join labels to predictions by request id; unknown / expired ids are counted.

        ``source`` is the label source the router accepted the labels from (its credential's
        id): it bounds how much of a labelled window one source holds (see
        `DriftMonitorCore.add_feedback`)."""
        before = self._core.displaced_total()
        counts = self._core.add_feedback(items, source=str(source))
        displaced = self._core.displaced_total() - before
        if displaced:
            self._metrics.add("mlops_feedback", displaced, (("outcome", "source_capped"),))
        return counts

    async def version_stats(
        self, versions: list[str], since: float, tasks: dict[str, str] | None = None
    ) -> dict[str, dict]:
        """Per-version numbers since ``since`` (wall clock) for the canary analysis; a
        version whose ``tasks`` entry is "regression" also gets its absolute errors."""
        out = {}
        for v in versions:
            snap = self._version_stats(v).since(since)
            snap.labelled, snap.correct = self._core.labelled_since(v, since)
            if (tasks or {}).get(v) == "regression":
                snap.abs_errors = self._core.abs_errors_since(v, since)
            out[v] = {k: getattr(snap, k) for k in snap.__dataclass_fields__}
        return out

    # ---- drift detection and retraining --------------------------------------------------
    def _controller_handle(self):
        if self._controller is None:
            ctx = serve.get_replica_context()
            self._controller = serve.get_deployment_handle("RolloutController", ctx.app_name)
        return self._controller

    def _note(self, event: str, **details: Any) -> None:
        entry = {"event": event, "at": round(time.time(), 3), **details}
        self._timeline = (self._timeline + [entry])[-50:]
        log.info("drift monitor: %s %s", event, details)

    async def _ensure_reference(self, champion: str) -> None:
        """Point the detectors at the champion's reference sample and baseline (accuracy for
        a classifier, RMSE for a regressor)."""
        if self._reference_for == champion:
            return
        name = self._args["model_name"]
        min_rows = self._core.cfg.min_reference_rows
        ref = await asyncio.to_thread(reference_for, self._client, name, champion, min_rows)
        info = await asyncio.to_thread(registry.version_info, self._client, name, champion)
        self._core.set_reference(champion, **ref)
        self._reference_for = champion
        self._reference_source = ref["reference_source"]
        self._recipe = recipe_for(info.tags, self._retraining.get("entry_point"))
        baseline = {
            k: ref[k] for k in ("baseline_accuracy", "baseline_rmse") if ref.get(k) is not None
        }
        features = ref["reference_features"]
        self._note(
            "reference",
            version=champion,
            task=ref["task"],
            reference_source=ref["reference_source"],
            rows=self._core.cfg.live_reference_rows if features is None else len(features),
            retraining=self._recipe,
            **baseline,
        )

    async def _evaluate_loop(self) -> None:
        while True:
            await asyncio.sleep(self._drift["evaluate_interval_s"])
            try:
                await self._evaluate_once()
            except Exception:
                log.exception("drift monitor: evaluation failed; retrying next interval")

    async def _evaluate_once(self) -> None:
        state = await self._controller_handle().poll.remote(-1, 0)
        champion = state.get("champion")
        if champion is None:
            return
        await self._ensure_reference(champion)
        report = self._core.evaluate(time.time())
        self._export(report, champion)
        if state.get("rollout") is not None or self._retrain_task is not None:
            return  # one change at a time: never retrain while a rollout or retraining runs
        fire, reason, numbers = self._core.should_retrain(time.time())
        if fire and self._recipe == NOT_CONFIGURED:
            # The alert stands (gauges, status, this event); no recipe, so nothing runs.
            self._last_retraining = {"retraining": NOT_CONFIGURED, "reason": reason}
            self._note("retraining_not_configured", version=champion, reason=reason)
        elif fire:
            self._retrain_task = asyncio.get_running_loop().create_task(
                self._run_retraining(reason, numbers)
            )

    def _export(self, report, champion: str) -> None:
        status = self._core.status()
        m = self._metrics
        # Windowed accuracy of every version with labels (a canary's too, not only the
        # champion's), so per-version accuracy panels and alerts see both.
        m.set_gauge(
            "mlops_accuracy",
            [
                ({"model_version": v}, s["window_accuracy"])
                for v, s in (status.get("versions") or {}).items()
                if s.get("window_accuracy") is not None
            ],
        )
        m.set_gauge(
            "mlops_drift_score",
            [
                ({"feature": feature, "test": test}, scores[test])
                for feature, scores in (status.get("features") or {}).items()
                for test in ("ks", "psi")
                if scores.get(test) is not None
            ],
        )
        m.set_gauge(
            "mlops_drift_detected",
            [
                ({"detector": d}, 1.0 if fired else 0.0)
                for d, fired in (status.get("detectors") or {}).items()
            ],
        )
        shadow = []
        for version, stats in self._stats.items():
            snap = stats.since(time.time() - 300)
            if snap.shadow_rows:
                shadow.append(({"model_version": version}, snap.shadow_agree / snap.shadow_rows))
        m.set_gauge("mlops_shadow_agreement", shadow)

    async def _training_rows(self, numbers: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict]:
        """Labelled rows to retrain on. After a label detector fired (accuracy dropped, or a
        regressor's error rose: the concept changed) only the rows labelled after the change:
        waits, up to `max_wait_s`, until there are `min_labelled_rows` of them."""
        detectors = numbers.get("detectors") or []
        if "accuracy" not in detectors and "error" not in detectors:
            X, y = self._core.labelled_feedback()
            return X, y, {}
        need = self._retraining["min_labelled_rows"]
        deadline = time.monotonic() + self._retraining["max_wait_s"]
        waiting = False
        metric = "mae" if "error" in detectors else "accuracy"
        while True:
            X, y, cp = self._core.labelled_after_drop()
            cut = {
                "change_point": {
                    "rows_dropped": cp.index,
                    f"{metric}_before": cp.before,
                    f"{metric}_after": cp.after,
                    "p_value": cp.p_value,
                }
            }
            if len(y) >= need or time.monotonic() >= deadline:
                return X, y, cut
            if not waiting:
                waiting = True
                self._note("retraining_waiting_for_labels", labelled=len(y), needed=need, **cut)
            await asyncio.sleep(self._drift["evaluate_interval_s"])

    async def _run_retraining(self, reason: str, numbers: dict[str, Any]) -> None:
        X, y, cut = await self._training_rows(numbers)
        trigger = {"reason": reason, "numbers": numbers}
        if len(y) < self._retraining["min_labelled_rows"]:
            self._note("retraining_skipped", reason=reason, labelled=len(y), **cut)
            self._core.retraining_finished(ok=False)
            self._retrain_task = None
            return
        self._core.retraining_started()
        self._note("retraining_started", reason=reason, labelled=len(y), **cut)
        self._metrics["mlops_retraining_runs"].inc(tags={"outcome": "started"})
        ok = False
        try:
            cfg = TrainingConfig.model_validate(self._training).model_dump()
            ref = retraining_task.options(num_cpus=self._retraining["task_cpus"]).remote(
                cfg, self._args["tracking_uri"], X, y, trigger, self._retraining
            )
            result = await ref
            self._last_retraining = result
            ok = True
            if result["registered"]:
                self._metrics["mlops_retraining_runs"].inc(tags={"outcome": "registered"})
                self._note(
                    "challenger_registered", version=result["version"], decision=result["decision"]
                )
                answer = await self._controller_handle().start_rollout.remote(result["version"])
                self._note("rollout_requested", version=result["version"], answer=answer)
            else:
                self._metrics["mlops_retraining_runs"].inc(tags={"outcome": "not_better"})
                self._note("retraining_not_better", decision=result["decision"])
        except Exception as exc:
            self._metrics["mlops_retraining_runs"].inc(tags={"outcome": "failed"})
            self._last_retraining = {"error": repr(exc)}
            self._note("retraining_failed", error=repr(exc))
            log.exception("drift monitor: retraining failed; will retry after the cooldown")
        finally:
            self._core.retraining_finished(ok=ok)
            self._retrain_task = None

    async def status(self) -> dict[str, Any]:
        """Scores per feature, accuracy, detectors, last trigger and why, retraining, timeline,
        and the shadow comparison of the last 5 minutes per challenger version."""
        shadow = {}
        for version, stats in self._stats.items():
            snap = stats.since(time.time() - 300)
            if snap.shadow_rows:
                shadow[version] = {
                    "rows": snap.shadow_rows,
                    "agree": snap.shadow_agree,
                    "agreement": round(snap.shadow_agree / snap.shadow_rows, 6),
                }
        core = self._core.status()
        return {
            **core,
            "retraining": {**core["retraining"], "recipe": self._recipe},
            "shadow": shadow,
            "reference_version": self._reference_for,
            "reference_source": self._reference_source,
            "retraining_running": self._retrain_task is not None,
            "last_retraining": self._last_retraining,
            "timeline": self._timeline,
        }
