"""RolloutController: the one place that decides which version each slot serves and the weights.

Routers and ModelServer replicas follow it by long-polling `poll` (an answer as soon as the
state's epoch changes, else after ``timeout_s``), so a change reaches every replica within a
round trip and no request ever calls the controller. It is a Serve deployment with one replica
rather than a free-standing named actor: Serve restarts it when it dies, deletes it with the
application, and shows it in `serve status`; its state comes back from MLflow on restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve

from deployments.analysis import StatsSnapshot, analyze
from deployments.rollout import RolloutCore, RolloutError
from monitoring.metrics import Metrics
from training import registry

log = logging.getLogger("ray.serve")


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class RolloutController:
    """Desired state for the application; see module docstring."""

    async def __init__(self, args: dict[str, Any], monitor=None):
        self._args = args
        self._policy = args["rollout"]
        self._monitor = monitor
        self._metrics = Metrics.create(
            ["mlops_canary_weight", "mlops_rollout_step", "mlops_rollout_events"]
        )
        self._changed = asyncio.Condition()
        self._lock = asyncio.Lock()  # one state transition at a time (reload, rollout steps)
        client = registry.get_client(args["tracking_uri"])
        self._core = RolloutCore(
            model_name=args["model_name"],
            client=client,
            heartbeat_ttl_s=2 * args["poll_timeout_s"] + 5,
            steps=list(self._policy["steps"]),
        )
        try:
            await asyncio.to_thread(self._core.bootstrap)
        except Exception as exc:  # registry down: serve 503s until it answers
            self._core.last_error = f"registry unreachable at start: {exc!r}"
            log.exception("RolloutController bootstrap failed; retrying in the background")
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self._watch_registry())
        self._analysis = loop.create_task(self._analysis_loop())
        self._gauges = loop.create_task(self._metrics.keep_alive())
        self._export_gauges()

    async def _notify(self) -> None:
        self._export_gauges()
        async with self._changed:
            self._changed.notify_all()

    def _export_gauges(self) -> None:
        core = self._core
        self._metrics.set_gauge(
            "mlops_canary_weight",
            [
                ({"slot": slot, "model_version": version or "none"}, core.weights.get(slot, 0.0))
                for slot, version in core.slots.items()
            ],
        )
        ro = core.rollout
        if ro is not None:
            steps = [({"model_version": ro["version"]}, ro["step"])]
        elif core.champion is not None:
            steps = [({"model_version": core.champion}, -1)]
        else:
            steps = []
        self._metrics.set_gauge("mlops_rollout_step", steps)

    def _count_event(self, entry: dict[str, Any]) -> None:
        self._metrics["mlops_rollout_events"].inc(
            tags={"model_version": entry.get("version") or "none", "event": entry["event"]}
        )

    async def _watch_registry(self) -> None:
        """Until a champion is live, look for one (a first `make train` after the app started)."""
        while True:
            await asyncio.sleep(self._args["registry_poll_s"])
            if self._core.live_slot() is not None:
                continue
            try:
                result = await self.reload()
                if result.get("changed"):
                    log.info("champion found in the registry: %s", result)
            except Exception:
                log.exception("registry poll failed")

    async def poll(
        self,
        known_epoch: int = -1,
        timeout_s: float | None = None,
        slot: str | None = None,
        replica_id: str | None = None,
        loaded: str | None = None,
    ) -> dict[str, Any]:
        """Long-poll: the state as soon as its epoch differs from ``known_epoch``.

        ModelServer replicas pass their slot, id and loaded version: that is their heartbeat.
        """
        if slot is not None and replica_id is not None:
            self._core.record_replica(slot, replica_id, loaded)
        timeout_s = self._args["poll_timeout_s"] if timeout_s is None else timeout_s
        if self._core.epoch == known_epoch and timeout_s > 0:
            try:
                async with self._changed:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._core.epoch != known_epoch),
                        timeout_s,
                    )
            except asyncio.TimeoutError:
                pass
        return self._core.snapshot()

    async def replica_stopped(self, slot: str, replica_id: str) -> None:
        self._core.forget_replica(slot, replica_id)

    async def status(self) -> dict[str, Any]:
        snap = self._core.snapshot()
        now = time.monotonic()
        snap["replicas"] = {
            s: {
                rid: {"loaded": r.loaded, "seen_s_ago": round(now - r.at, 1)}
                for rid, r in reps.items()
            }
            for s, reps in self._core.replicas.items()
        }
        snap["history"] = list(self._core.history)
        snap["policy"] = dict(self._policy)
        return snap

    async def _load_into(self, slot: str, version: str) -> None:
        """Assign ``version`` to ``slot`` and wait until every replica of it has loaded it."""
        await asyncio.to_thread(self._core.assign, slot, version)
        await self._notify()
        deadline = time.monotonic() + self._args["slot_ready_timeout_s"]
        while not self._core.slot_ready(slot, version):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"slot {slot} did not load v{version} within "
                    f"{self._args['slot_ready_timeout_s']}s; replicas: {self._core.replicas[slot]}"
                )
            await asyncio.sleep(0.1)

    async def reload(self) -> dict[str, Any]:
        """Resolve alias ``champion`` again; load a new one into the idle slot, then cut over.

        The old slot keeps its version (and finishes its in-flight requests); it is simply no
        longer routed to. Nothing changes if the champion is the one already live.
        """
        async with self._lock:
            if self._core.rollout is not None:
                return {
                    "changed": False,
                    "error": f"a rollout of v{self._core.rollout['version']} is in progress; "
                    "promote or roll it back first",
                }
            try:
                plan = await asyncio.to_thread(self._core.plan_reload)
            except Exception as exc:
                log.exception("reload: registry lookup failed")
                return {"changed": False, "error": f"registry lookup failed: {exc!r}"}
            if plan is None:
                return {
                    "changed": False,
                    "champion": self._core.champion,
                    "slots": dict(self._core.slots),
                }
            slot, version = plan
            previous = self._core.champion
            try:
                await self._load_into(slot, version)
            except Exception as exc:
                log.exception("reload: loading v%s into %s failed", version, slot)
                await asyncio.to_thread(self._core.assign, slot, None)
                await self._notify()
                return {"changed": False, "error": str(exc)}
            self._core.cut_over(slot, version)
            self._core.last_error = None
            await self._notify()
            try:
                await asyncio.to_thread(self._core.persist)
            except Exception:
                log.exception("reload: could not persist slot state to MLflow")
            log.info("reload: v%s live in slot %s (was v%s)", version, slot, previous)
            return {
                "changed": True,
                "champion": version,
                "previous": previous,
                "slot": slot,
                "slots": dict(self._core.slots),
            }

    # ---- canary rollout ------------------------------------------------------------------
    async def _persist(self) -> None:
        try:
            await asyncio.to_thread(self._core.persist)
            await asyncio.to_thread(self._core.persist_history)
        except Exception:
            log.exception("could not persist rollout state to MLflow")

    async def start_rollout(self, version: str) -> dict[str, Any]:
        """Load ``version`` into the idle slot, wait until it is ready, then give it the first
        step's share of traffic. Errors come back as ``{"error": ...}``."""
        async with self._lock:
            try:
                slot = await asyncio.to_thread(self._core.begin_rollout, str(version))
            except RolloutError as exc:
                return {"error": str(exc)}
            except Exception as exc:
                return {"error": f"v{version} not found in the registry: {exc}"}
            try:
                await self._load_into(slot, str(version))
            except Exception as exc:
                log.exception("rollout: loading v%s into %s failed", version, slot)
                await asyncio.to_thread(self._core.assign, slot, None)
                await self._notify()
                return {"error": str(exc)}
            await asyncio.to_thread(self._core.enter_step, str(version), slot, 0)
            self._count_event(self._core.history[-1])
            await self._notify()
            await self._persist()
            return {"started": True, "rollout": self._core.rollout}

    async def promote(self, reason: str = "promoted by an operator") -> dict[str, Any]:
        async with self._lock:
            return await self._finish("promote", reason, {})

    async def rollback(self, reason: str = "rolled back by an operator") -> dict[str, Any]:
        async with self._lock:
            return await self._finish("rollback", reason, {})

    async def _finish(self, action: str, reason: str, numbers: dict) -> dict[str, Any]:
        try:
            fn = self._core.promote if action == "promote" else self._core.rollback
            entry = await asyncio.to_thread(fn, reason, numbers)
        except RolloutError as exc:
            return {"error": str(exc)}
        self._count_event(entry)
        await self._notify()
        await self._persist()
        return {"event": entry, "champion": self._core.champion, "weights": self._core.weights}

    async def set_paused(self, paused: bool) -> dict[str, Any]:
        async with self._lock:
            try:
                self._core.set_paused(paused)
            except RolloutError as exc:
                return {"error": str(exc)}
            await self._notify()
            await self._persist()
            return {"rollout": self._core.rollout}

    async def set_weights(self, weights: dict[str, float]) -> dict[str, Any]:
        """Set weights by hand; a rollout in progress is paused so it does not undo them."""
        async with self._lock:
            try:
                self._core.set_weights(weights)
            except ValueError as exc:
                return {"error": str(exc)}
            if self._core.rollout is not None and not self._core.rollout["paused"]:
                self._core.set_paused(True)
            await self._notify()
            await self._persist()
            return {"weights": self._core.weights, "rollout": self._core.rollout}

    async def history(self) -> list[dict[str, Any]]:
        return list(self._core.history)

    async def _stats(self, since: float) -> tuple[StatsSnapshot, StatsSnapshot]:
        ro = self._core.rollout
        versions = [self._core.champion, ro["version"]]
        raw = await self._monitor.version_stats.remote(versions, since)
        return StatsSnapshot(**raw[versions[0]]), StatsSnapshot(**raw[versions[1]])

    async def _analysis_loop(self) -> None:
        while True:
            await asyncio.sleep(self._policy["analysis_interval_s"])
            try:
                await self._analyse_once()
            except Exception:
                log.exception("rollout analysis failed; retrying next interval")

    async def _analyse_once(self) -> None:
        """One analysis pass: next step, promotion, rollback, or hold."""
        async with self._lock:
            core, policy = self._core, self._policy
            ro = core.rollout
            if ro is None:
                return
            if ro.get("resumed"):
                # After a restart the challenger slot reloads first; only then does it get its
                # traffic back (paused or not), and the step's evidence starts from zero.
                if core.slot_ready(ro["slot"], ro["version"]):
                    core.finish_resume()
                    await self._notify()
                    await self._persist()
                return
            if ro["paused"] or self._monitor is None:
                return
            now = core.wall()
            elapsed = now - ro["step_started_at"]
            champ, chal = await self._stats(ro["step_started_at"])
            verdict = analyze(
                champ,
                chal,
                min_requests=policy["min_requests"],
                error_rate_margin=policy["error_rate_margin"],
                latency_p99_factor=policy["latency_p99_factor"],
                latency_p99_floor_ms=policy["latency_p99_floor_ms"],
                min_labelled=policy["min_labelled"],
                accuracy_alpha=policy["accuracy_alpha"],
            )
            ro["analysis"] = {
                "outcome": verdict.outcome,
                "reasons": verdict.reasons,
                "numbers": verdict.numbers,
                "elapsed_s": round(elapsed, 1),
            }
            step = ro["step"]
            if verdict.outcome == "fail":
                await self._finish(
                    "rollback",
                    f"analysis failed at step {step + 1}: " + "; ".join(verdict.reasons),
                    verdict.numbers,
                )
                return
            if verdict.outcome == "pass" and elapsed >= policy["min_step_seconds"]:
                # The step to 100% is the promotion itself: at 100% the champion gets no
                # traffic, so there would be nothing left to compare against.
                if step + 1 >= len(core.steps) or core.steps[step + 1] >= 100:
                    await self._finish(
                        "promote", f"passed all {len(core.steps)} steps", verdict.numbers
                    )
                    return
                core.enter_step(ro["version"], ro["slot"], step + 1)
                core.record_event("step", ro["version"], f"passed step {step + 1}", verdict.numbers)
                await self._notify()
                await self._persist()
                return
            hold = "; ".join(verdict.reasons)
            if elapsed > policy["max_step_seconds"]:
                ro["state"] = f"holding, inconclusive after {elapsed:.0f}s: {hold}"
            else:
                ro["state"] = f"step {step + 1}/{len(core.steps)} collecting: {hold}"
