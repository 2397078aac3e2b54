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
import os
import time
from typing import Any

from ray import serve

from deployments.analysis import StatsSnapshot, analyze
from deployments.rollout import RolloutCore, RolloutError, StaleRecord, check_reason
from deployments.routing import StateUnknown
from monitoring.metrics import SPECS, Metrics
from training import registry

log = logging.getLogger("ray.serve")

REGISTRY_GAUGE = "mlops_registry_reachable"
# The MLflow HTTP client retries a refused connection for minutes by default (7 retries,
# backoff factor 2). The controller retries on its own schedule and must report an outage in
# seconds, so its own process fails fast unless the deployment sets these explicitly.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
MAX_BACKOFF_S = 30.0


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class RolloutController:
    """Desired state for the application; see module docstring."""

    async def __init__(self, args: dict[str, Any], monitor=None):
        for key, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self._args = args
        self._policy = args["rollout"]
        self._monitor = monitor
        names = ["mlops_canary_weight", "mlops_rollout_step", "mlops_rollout_events"]
        self._metrics = Metrics.create(
            names + ([REGISTRY_GAUGE] if REGISTRY_GAUGE in SPECS else [])
        )
        if REGISTRY_GAUGE not in self._metrics.handles:
            from ray.serve import metrics as serve_metrics

            self._metrics.handles[REGISTRY_GAUGE] = serve_metrics.Gauge(
                REGISTRY_GAUGE,
                description="1 when the MLflow registry answered the controller's last call",
                tag_keys=(),
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
        self._retry_s = float(args["registry_poll_s"])
        try:
            await self._registry(self._core.bootstrap)
        except Exception as exc:
            # Registry down: no empty state is published (routers keep theirs, see `poll`);
            # a router's held state the replicas confirm may be adopted as provisional, and
            # bootstrap is retried with backoff.
            self._core.last_error = f"registry unreachable at start: {exc}"[:500]
            self._retry_s = 0.5
            log.error("RolloutController bootstrap failed (%s); retrying with backoff", exc)
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
        self._metrics.set_gauge(
            REGISTRY_GAUGE, [({}, 1.0 if core.registry_health.reachable else 0.0)]
        )

    def _count_event(self, entry: dict[str, Any]) -> None:
        self._metrics["mlops_rollout_events"].inc(
            tags={"model_version": entry.get("version") or "none", "event": entry["event"]}
        )

    async def _registry(self, fn, *args):
        """Run ``fn`` (a core method that calls the registry) in a thread and keep track of
        whether the registry answers: an outage is logged once, shown in `status`, in the
        state routers poll (``registry_reachable``) and in the gauge mlops_registry_reachable."""
        health = self._core.registry_health
        try:
            result = await asyncio.to_thread(fn, *args)
        except registry.RegistryUnavailable as exc:
            if health.failed(exc):
                log.error("MLflow registry unreachable: %s; serving the last known state", exc)
                self._core.bump()
                await self._notify()
            raise
        if health.ok():
            log.warning("MLflow registry reachable again")
            self._core.bump()
            await self._notify()
        return result

    async def _watch_registry(self) -> None:
        """Keep the state in step with the registry: read it until it answers once (with
        backoff), write what could not be written, notice when it is back, and until a
        champion is live look for one (a first `make train` after the app started)."""
        while True:
            await asyncio.sleep(self._retry_s)
            try:
                await self._registry_tick()
                self._retry_s = float(self._args["registry_poll_s"])
            except Exception as exc:
                self._retry_s = min(max(self._retry_s * 2, 0.5), MAX_BACKOFF_S)
                log.warning("registry poll failed (%s); next try in %.1fs", exc, self._retry_s)

    async def _registry_tick(self) -> None:
        core = self._core
        if not core.known or core.provisional:
            async with self._lock:
                await self._bootstrap()
            return
        if core.dirty:
            async with self._lock:
                await self._persist_retry()
            return
        if not core.registry_health.reachable:
            await self._registry(
                registry.alias_version, core.client, core.model_name, registry.CHAMPION
            )
            return
        if core.live_slot() is None:
            result = await self.reload()
            if result.get("error"):
                raise RuntimeError(result["error"])
            if result.get("changed"):
                log.info("champion found in the registry: %s", result)

    async def _bootstrap(self) -> None:
        await self._registry(self._core.bootstrap)
        self._core.last_error = None
        log.info(
            "state read from the registry: champion v%s, slots %s, weights %s, rollout %s",
            self._core.champion,
            self._core.slots,
            self._core.weights,
            self._core.rollout,
        )
        await self._notify()

    async def _persist_retry(self) -> None:
        """Write state that an outage kept in memory; if another writer committed meanwhile,
        its record is the truth: read it again."""
        try:
            await self._registry(self._core.persist)
        except StaleRecord as exc:
            log.warning("%s", exc)
            await self._bootstrap()

    async def poll(
        self,
        known_epoch: int = -1,
        timeout_s: float | None = None,
        slot: str | None = None,
        replica_id: str | None = None,
        loaded: str | None = None,
        held: dict[str, Any] | None = None,
        refused: dict[str, dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Long-poll: the state as soon as its epoch differs from ``known_epoch``.

        ModelServer replicas pass their slot, id and loaded version: that is their heartbeat;
        and ``refused``, the versions they will not load (with why), shown in ``load_errors``.
        A router may pass ``held``, the state it last applied. Until the registry has been
        read once (a restart during an outage), a router gets `StateUnknown` rather than an
        empty state (it keeps routing as it was), unless a router's ``held`` state, confirmed
        by the replicas' reports, was adopted as provisional (``provisional: true``).
        """
        core = self._core
        if slot is not None and replica_id is not None:
            before = core.load_errors(), core.loaded()
            core.record_replica(slot, replica_id, loaded, refused)
            if (core.load_errors(), core.loaded()) != before:
                # Refusals: routers answer 503 with the reason, /health says it. A slot's
                # loaded versions: /health turns ready once the champion's slot holds it.
                core.bump()
                await self._notify()
        if not core.known and core.adopt_provisional(held):
            await self._notify()
        timeout_s = self._args["poll_timeout_s"] if timeout_s is None else timeout_s
        router = slot is None
        if timeout_s > 0 and (core.epoch == known_epoch or router and not core.known):
            try:
                async with self._changed:
                    await asyncio.wait_for(
                        self._changed.wait_for(
                            lambda: core.epoch != known_epoch and (core.known or not router)
                        ),
                        timeout_s,
                    )
            except asyncio.TimeoutError:
                pass
        if router and not core.known:
            raise StateUnknown(
                "the rollout controller restarted and the MLflow registry has not answered "
                f"yet ({core.registry_health.last_error}); keep the last applied state"
            )
        return core.snapshot()

    async def replica_stopped(self, slot: str, replica_id: str) -> None:
        self._core.forget_replica(slot, replica_id)

    async def status(self) -> dict[str, Any]:
        """The state, plus replicas, history, policy, and the registry's health:
        ``registry`` {reachable, since, last_error}, ``known``, ``persisted``, ``seq``."""
        core = self._core
        snap = core.snapshot()
        now = time.monotonic()
        snap["replicas"] = {
            s: {
                rid: {"loaded": r.loaded, "seen_s_ago": round(now - r.at, 1)}
                for rid, r in reps.items()
            }
            for s, reps in core.replicas.items()
        }
        snap["history"] = list(core.history)
        snap["policy"] = dict(self._policy)
        snap["registry"] = core.registry_health.to_dict()
        snap["known"] = core.known
        snap["persisted"] = not core.dirty
        snap["seq"] = core.seq
        return snap

    async def _load_into(self, slot: str, version: str) -> None:
        """Assign ``version`` to ``slot`` and wait until every replica of it has loaded it."""
        await self._registry(self._core.assign, slot, version)
        await self._notify()
        deadline = time.monotonic() + self._args["slot_ready_timeout_s"]
        while not self._core.slot_ready(slot, version):
            why = self._core.slot_refused(slot, version)
            if why is not None:
                raise RuntimeError(f"slot {slot} cannot serve v{version}: {why}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"slot {slot} did not load v{version} within "
                    f"{self._args['slot_ready_timeout_s']}s; replicas: {self._core.replicas[slot]}"
                )
            await asyncio.sleep(0.1)

    def _refuse_unknown(self) -> dict[str, Any] | None:
        core = self._core
        if not core.known or core.provisional:
            return {
                "error": "the registry has not been read since the controller started "
                f"({core.registry_health.last_error}); nothing changed, retry when it answers"
            }
        return None

    async def _commit(self, saved: dict[str, Any] | None) -> str | None:
        """Write the state (the record last). On failure: with ``saved``, the action is undone
        in memory (aliases already moved are put back by the retry loop) and the error is
        returned; without it (a rollback, an automatic step), memory stays ahead and the
        retry loop writes it when the registry answers."""
        try:
            await self._registry(self._core.persist)
            return None
        except Exception as exc:
            log.error("could not write the rollout state to MLflow: %r", exc)
            if saved is not None:
                self._core.restore(saved)
                await self._notify()
            if isinstance(exc, StaleRecord):
                try:
                    await self._bootstrap()
                except Exception:
                    log.exception("re-reading the registry after a stale record failed")
            return f"{exc}"[:500]

    async def reload(self) -> dict[str, Any]:
        """Resolve alias ``champion`` again; load a new one into the idle slot, then cut over.

        The old slot keeps its version (and finishes its in-flight requests); it is simply no
        longer routed to. Nothing changes if the champion is the one already live.
        """
        async with self._lock:
            refused = self._refuse_unknown()
            if refused:
                return {"changed": False, **refused}
            if self._core.rollout is not None:
                return {
                    "changed": False,
                    "error": f"a rollout of v{self._core.rollout['version']} is in progress; "
                    "promote or roll it back first",
                }
            try:
                plan = await self._registry(self._core.plan_reload)
            except Exception as exc:
                log.warning("reload: registry lookup failed: %r", exc)
                return {"changed": False, "error": f"registry lookup failed: {exc}"[:500]}
            if plan is None:
                return {
                    "changed": False,
                    "champion": self._core.champion,
                    "slots": dict(self._core.slots),
                }
            slot, version = plan
            previous = self._core.champion
            saved = self._core.checkpoint()
            try:
                await self._load_into(slot, version)
            except Exception as exc:
                log.exception("reload: loading v%s into %s failed", version, slot)
                self._core.restore(saved)
                await self._notify()
                return {"changed": False, "error": str(exc)[:500]}
            self._core.cut_over(slot, version)
            self._core.last_error = None
            await self._notify()
            # The alias already moved (an operator's decision); if the record cannot be written
            # now the retry loop writes it, and a restart would follow the alias anyway.
            await self._commit(None)
            log.info("reload: v%s live in slot %s (was v%s)", version, slot, previous)
            return {
                "changed": True,
                "champion": version,
                "previous": previous,
                "slot": slot,
                "slots": dict(self._core.slots),
            }

    # ---- canary rollout ------------------------------------------------------------------
    async def start_rollout(self, version: str) -> dict[str, Any]:
        """Load ``version`` into the idle slot, wait until it is ready, then give it the first
        step's share of traffic and set alias ``challenger`` (the controller is its only
        writer). Refused, with nothing changed, while another version is rolling out; asking
        again for the version already rolling out changes nothing. Errors come back as
        ``{"error": ...}``."""
        version = str(version)
        async with self._lock:
            core = self._core
            refused = self._refuse_unknown()
            if refused:
                return refused
            if core.rollout is not None and core.rollout["version"] == version:
                return {"started": False, "already": True, "rollout": dict(core.rollout)}
            saved = core.checkpoint()
            try:
                slot = await self._registry(core.begin_rollout, version)
            except RolloutError as exc:
                return {"error": str(exc)}
            except registry.RegistryUnavailable as exc:
                return {"error": f"nothing changed: {exc}"[:500]}
            except Exception as exc:
                return {"error": f"v{version} not found in the registry: {exc}"[:500]}
            try:
                await self._load_into(slot, version)
            except Exception as exc:
                log.exception("rollout: loading v%s into %s failed", version, slot)
                core.restore(saved)
                await self._notify()
                return {"error": str(exc)[:500]}
            core.enter_step(version, slot, 0)
            error = await self._commit(saved)
            if error:
                return {"error": f"rollout of v{version} not started, nothing changed: {error}"}
            self._count_event(core.history[-1])
            await self._notify()
            return {"started": True, "rollout": core.rollout}

    async def promote(self, reason: str = "promoted by an operator") -> dict[str, Any]:
        """Promote the challenger now; refused with nothing changed if ``reason`` is not a
        string of at most 500 characters or the registry cannot take the change."""
        try:
            check_reason(reason)
        except RolloutError as exc:
            return {"error": str(exc)}
        async with self._lock:
            return await self._finish("promote", reason, {})

    async def rollback(self, reason: str = "rolled back by an operator") -> dict[str, Any]:
        """Roll the challenger back now; refused with nothing changed if ``reason`` is not a
        string of at most 500 characters."""
        try:
            check_reason(reason)
        except RolloutError as exc:
            return {"error": str(exc)}
        async with self._lock:
            return await self._finish("rollback", reason, {})

    async def _finish(self, action: str, reason: str, numbers: dict) -> dict[str, Any]:
        core = self._core
        refused = self._refuse_unknown()
        if refused:
            return refused
        saved = core.checkpoint()
        try:
            fn = core.promote if action == "promote" else core.rollback
            entry = fn(reason, numbers)
        except Exception as exc:
            core.restore(saved)
            return {"error": str(exc)[:500]}
        result: dict[str, Any] = {"event": entry}
        if action == "promote":
            # Nothing is published before the registry has it: a promotion that cannot be
            # written is undone (the champion alias, if it moved, is put back).
            error = await self._commit(saved)
            if error:
                return {"error": f"promotion not written to the registry, nothing changed: {error}"}
            await self._notify()
        else:
            # Traffic first: a rejected version must lose its traffic even if the registry is
            # down; the retry loop writes the rollback (challenger alias first) when it answers.
            await self._notify()
            error = await self._commit(None)
            if error:
                result["persisted"] = False
                result["warning"] = f"rolled back in memory; registry write pending: {error}"
        self._count_event(entry)
        result.update(champion=core.champion, weights=core.weights)
        return result

    async def set_paused(self, paused: bool) -> dict[str, Any]:
        async with self._lock:
            refused = self._refuse_unknown()
            if refused:
                return refused
            saved = self._core.checkpoint()
            try:
                self._core.set_paused(bool(paused))
            except RolloutError as exc:
                return {"error": str(exc)}
            error = await self._commit(saved)
            if error:
                return {"error": f"not written to the registry, nothing changed: {error}"}
            await self._notify()
            return {"rollout": self._core.rollout}

    async def set_weights(self, weights: dict[str, float]) -> dict[str, Any]:
        """Set weights by hand; a rollout in progress is paused so it does not undo them.
        Refused, with nothing changed or written, unless every weight is a finite number in
        0..1e6 for a known slot that serves a version, and not all are zero."""
        async with self._lock:
            refused = self._refuse_unknown()
            if refused:
                return refused
            saved = self._core.checkpoint()
            try:
                self._core.set_weights(weights)
            except RolloutError as exc:
                return {"error": str(exc)}
            if self._core.rollout is not None and not self._core.rollout["paused"]:
                self._core.set_paused(True)
            error = await self._commit(saved)
            if error:
                return {"error": f"weights not written to the registry, nothing changed: {error}"}
            await self._notify()
            return {"weights": self._core.weights, "rollout": self._core.rollout}

    async def history(self) -> list[dict[str, Any]]:
        return list(self._core.history)

    def _task(self) -> str:
        """The task of the rollout (the challenger's, else the champion's; classification
        when the version info has none): which label test the analysis runs."""
        core = self._core
        for version in (core.rollout["version"], core.champion):
            task = (core.versions.get(version) or {}).get("task")
            if task:
                return str(task)
        return "classification"

    async def _stats(self, since: float, task: str) -> tuple[StatsSnapshot, StatsSnapshot]:
        ro = self._core.rollout
        versions = [self._core.champion, ro["version"]]
        tasks = dict.fromkeys(versions, task)
        raw = await self._monitor.version_stats.remote(versions, since, tasks)
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
                    await self._commit(None)
                return
            if ro["paused"] or self._monitor is None:
                return
            now = core.wall()
            elapsed = now - ro["step_started_at"]
            task = self._task()
            champ, chal = await self._stats(ro["step_started_at"], task)
            verdict = analyze(
                champ,
                chal,
                min_requests=policy["min_requests"],
                error_rate_margin=policy["error_rate_margin"],
                latency_p99_factor=policy["latency_p99_factor"],
                latency_p99_floor_ms=policy["latency_p99_floor_ms"],
                min_labelled=policy["min_labelled"],
                accuracy_alpha=policy["accuracy_alpha"],
                task=task,
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
                await self._commit(None)
                return
            hold = "; ".join(verdict.reasons)
            if elapsed > policy["max_step_seconds"]:
                ro["state"] = f"holding, inconclusive after {elapsed:.0f}s: {hold}"
            else:
                ro["state"] = f"step {step + 1}/{len(core.steps)} collecting: {hold}"
