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

from deployments.rollout import RolloutCore
from training import registry

log = logging.getLogger("ray.serve")


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class RolloutController:
    """Desired state for the application; see module docstring."""

    async def __init__(self, args: dict[str, Any]):
        self._args = args
        self._changed = asyncio.Condition()
        self._lock = asyncio.Lock()  # one state transition at a time (reload, rollout steps)
        client = registry.get_client(args["tracking_uri"])
        self._core = RolloutCore(
            model_name=args["model_name"],
            client=client,
            heartbeat_ttl_s=2 * args["poll_timeout_s"] + 5,
        )
        try:
            await asyncio.to_thread(self._core.bootstrap)
        except Exception as exc:  # registry down: serve 503s until it answers
            self._core.last_error = f"registry unreachable at start: {exc!r}"
            log.exception("RolloutController bootstrap failed; retrying in the background")
        self._watch = asyncio.get_running_loop().create_task(self._watch_registry())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

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
