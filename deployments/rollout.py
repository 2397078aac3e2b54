"""Desired serving state and the decisions that change it. Plain Python, no Ray.

The state is small: which version each slot serves, the traffic weights, and what is known of
those versions. It is rebuilt from the MLflow registry (alias ``champion`` plus registered
model tags) so a restarted controller, or a restarted cluster, comes back to the same place.
`RolloutController` (controller.py) wraps this in a Serve deployment and does the waiting.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from deployments.routing import SLOTS
from training import registry

log = logging.getLogger(__name__)

SLOT_TAG = "mlops.slot.{slot}"
WEIGHTS_TAG = "mlops.weights"
ROLLOUT_TAG = "mlops.rollout"
HISTORY_TAG = "mlops.history"
HISTORY_KEEP = 10


class RolloutError(ValueError):
    """A rollout request that cannot be carried out (the message says why)."""


@dataclass
class ReplicaSeen:
    loaded: str | None
    at: float


@dataclass
class RolloutCore:
    """The controller's state and its transitions; every change bumps ``epoch``."""

    model_name: str
    client: Any  # MlflowClient
    heartbeat_ttl_s: float = 15.0
    clock: Any = time.monotonic
    epoch: int = 0
    slots: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(SLOTS))
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SLOTS, 0.0))
    champion: str | None = None
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    replicas: dict[str, dict[str, ReplicaSeen]] = field(
        default_factory=lambda: {s: {} for s in SLOTS}
    )
    last_error: str | None = None
    steps: list[float] = field(default_factory=lambda: [10.0, 25.0, 50.0, 100.0])
    rollout: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    wall: Any = time.time

    # ---- reading -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model_name": self.model_name,
            "champion": self.champion,
            "slots": dict(self.slots),
            "weights": dict(self.weights),
            "versions": {v: self.versions[v] for v in self.slots.values() if v in self.versions},
            "last_error": self.last_error,
            "rollout": dict(self.rollout) if self.rollout else None,
            "replicas": {s: self.replica_count(s) for s in SLOTS},
        }

    def live_slot(self) -> str | None:
        for s in SLOTS:
            if self.champion is not None and self.slots[s] == self.champion:
                return s
        return None

    def idle_slot(self) -> str:
        live = self.live_slot()
        return next(s for s in SLOTS if s != live)

    # ---- replica bookkeeping -------------------------------------------------------------
    def record_replica(self, slot: str, replica_id: str, loaded: str | None) -> None:
        self.replicas[slot][replica_id] = ReplicaSeen(loaded, self.clock())

    def forget_replica(self, slot: str, replica_id: str) -> None:
        self.replicas[slot].pop(replica_id, None)

    def replica_count(self, slot: str) -> int:
        """Replicas of ``slot`` heard from within the heartbeat TTL."""
        now = self.clock()
        return sum(1 for r in self.replicas[slot].values() if now - r.at <= self.heartbeat_ttl_s)

    def slot_ready(self, slot: str, version: str) -> bool:
        """Every replica of ``slot`` heard from recently has ``version`` loaded (and one has)."""
        now = self.clock()
        alive = [r for r in self.replicas[slot].values() if now - r.at <= self.heartbeat_ttl_s]
        return bool(alive) and all(r.loaded == version for r in alive)

    # ---- transitions ---------------------------------------------------------------------
    def _bump(self) -> None:
        self.epoch += 1

    def describe(self, version: str) -> dict[str, Any]:
        if version not in self.versions:
            self.versions[version] = registry.version_info(
                self.client, self.model_name, version
            ).to_dict()
        return self.versions[version]

    def assign(self, slot: str, version: str | None) -> None:
        """Point ``slot`` at ``version``; its replicas load it before it gets traffic."""
        if version is not None:
            self.describe(version)
        self.slots[slot] = version
        self._bump()

    def set_weights(self, weights: dict[str, float]) -> None:
        unknown = set(weights) - set(SLOTS)
        if unknown:
            raise ValueError(f"unknown slots {sorted(unknown)}; slots are {list(SLOTS)}")
        if any(w < 0 for w in weights.values()):
            raise ValueError("weights must be >= 0")
        new = {s: float(weights.get(s, 0.0)) for s in SLOTS}
        for s, w in new.items():
            if w > 0 and self.slots[s] is None:
                raise ValueError(f"slot {s} serves no version and cannot take traffic")
        if sum(new.values()) <= 0:
            raise ValueError("at least one slot needs a positive weight")
        total = sum(new.values())
        self.weights = {s: w / total for s, w in new.items()}
        self._bump()

    def persist(self) -> None:
        """Write slot assignment and weights to the registered model's tags."""
        for s in SLOTS:
            self.client.set_registered_model_tag(
                self.model_name, SLOT_TAG.format(slot=s), self.slots[s] or ""
            )
        self.client.set_registered_model_tag(
            self.model_name, WEIGHTS_TAG, json.dumps(self.weights, sort_keys=True)
        )
        durable = None
        if self.rollout is not None:
            durable = {k: self.rollout[k] for k in ("version", "slot", "step", "paused")}
        self.client.set_registered_model_tag(
            self.model_name, ROLLOUT_TAG, json.dumps(durable) if durable else ""
        )

    def bootstrap(self) -> None:
        """Rebuild state from the registry: champion alias, then slot tags where consistent.

        Anything the tags say that the aliases contradict falls back to the safe state: the
        champion alone, taking all traffic.
        """
        champion = registry.alias_version(self.client, self.model_name, registry.CHAMPION)
        tags = registry.model_tags(self.client, self.model_name)
        self.champion = champion
        self.slots = dict.fromkeys(SLOTS)
        self.weights = dict.fromkeys(SLOTS, 0.0)
        if champion is None:
            self._bump()
            return
        tagged = {s: tags.get(SLOT_TAG.format(slot=s)) or None for s in SLOTS}
        live = next((s for s in SLOTS if tagged[s] == champion), SLOTS[0])
        self.assign(live, champion)
        self.weights[live] = 1.0
        try:
            self.history = json.loads(tags.get(HISTORY_TAG) or "[]")
        except ValueError:
            self.history = []
        self._resume_rollout(tags.get(ROLLOUT_TAG), live, tags.get(WEIGHTS_TAG))
        self._bump()

    def _resume_rollout(self, raw: str | None, live: str, raw_weights: str | None) -> None:
        """Resume a rollout recorded in MLflow if the aliases still agree with it; otherwise
        record that it was abandoned and stay on the champion alone (the safe state)."""
        if not raw:
            return
        try:
            saved = json.loads(raw)
            version, slot, step = str(saved["version"]), saved["slot"], int(saved["step"])
        except (ValueError, KeyError, TypeError):
            self.record_event("abandoned", None, f"unreadable rollout record {raw!r}", {})
            return
        challenger = registry.alias_version(self.client, self.model_name, registry.CHALLENGER)
        if challenger != version or slot == live or slot not in SLOTS or version == self.champion:
            self.record_event(
                "abandoned",
                version,
                f"rollout record (v{version} in {slot}) disagrees with the registry "
                f"(challenger alias: {challenger}); serving the champion alone",
                {},
            )
            return
        self.assign(slot, version)
        self.rollout = {
            "version": version,
            "slot": slot,
            "step": min(step, len(self.steps) - 1),
            "paused": bool(saved.get("paused")),
            "started_at": self.wall(),
            "step_started_at": self.wall(),
            "state": "resumed after restart: waiting for the slot to load",
            "analysis": None,
            "resumed": True,
            # Weights set by hand (which pause the rollout) come back as they were.
            "resume_weights": self._saved_weights(raw_weights, live, slot),
        }

    @staticmethod
    def _saved_weights(raw: str | None, live: str, slot: str) -> dict[str, float] | None:
        try:
            saved = {s: float(w) for s, w in json.loads(raw or "{}").items()}
        except (ValueError, TypeError, AttributeError):
            return None
        if set(saved) != {live, slot} or any(w < 0 for w in saved.values()):
            return None
        return saved if sum(saved.values()) > 0 else None

    def finish_resume(self) -> None:
        """The resumed challenger's slot has loaded: give it its traffic back (the step's
        share, or the hand-set weights of a paused rollout); the step's evidence restarts."""
        ro = self._require_rollout()
        weights = ro.pop("resume_weights", None)
        self.enter_step(ro["version"], ro["slot"], ro["step"])
        if ro["paused"]:
            if weights is not None:
                total = sum(weights.values())
                self.weights = {s: weights.get(s, 0.0) / total for s in SLOTS}
            ro["state"] = f"paused at step {ro['step'] + 1} (resumed after restart)"

    def plan_reload(self) -> tuple[str, str] | None:
        """If alias ``champion`` moved, the (idle slot, new version) to load; else None."""
        champion = registry.alias_version(self.client, self.model_name, registry.CHAMPION)
        if champion is None or champion == self.champion and self.live_slot() is not None:
            return None
        return self.idle_slot(), champion

    def cut_over(self, slot: str, version: str) -> None:
        """``slot`` has ``version`` loaded everywhere: it takes all traffic and is champion."""
        self.champion = version
        self.weights = {s: (1.0 if s == slot else 0.0) for s in SLOTS}
        self._bump()

    # ---- canary rollout ------------------------------------------------------------------
    def record_event(self, event: str, version: str | None, reason: str, numbers: dict) -> dict:
        entry = {
            "event": event,
            "version": version,
            "at": round(self.wall(), 3),
            "reason": reason,
            "numbers": numbers,
        }
        self.history = (self.history + [entry])[-HISTORY_KEEP:]
        log.info("rollout %s v%s: %s", event, version, reason)
        return entry

    def persist_history(self) -> None:
        # MLflow tag values are bounded; keep the newest entries that fit.
        history = self.history
        while history and len(json.dumps(history)) > 4500:
            history = history[1:]
        self.client.set_registered_model_tag(self.model_name, HISTORY_TAG, json.dumps(history))

    def begin_rollout(self, version: str) -> str:
        """Check that ``version`` can be rolled out; return the idle slot to load it into."""
        version = str(version)
        if self.rollout is not None:
            raise RolloutError(
                f"a rollout of v{self.rollout['version']} is in progress; promote or roll it "
                "back first"
            )
        if self.champion is None or self.live_slot() is None:
            raise RolloutError("no live champion to compare against; use /reload instead")
        if version == self.champion:
            raise RolloutError(f"v{version} is already the champion")
        self.describe(version)  # raises if the version does not exist
        return self.idle_slot()

    def enter_step(self, version: str, slot: str, step: int, *, resumed: bool = False) -> None:
        """Give the challenger ``steps[step]`` percent of traffic."""
        share = self.steps[step] / 100.0
        live = self.live_slot()
        self.weights = {live: 1.0 - share, slot: share}
        now = self.wall()
        if self.rollout is None:
            self.rollout = {"version": version, "slot": slot, "started_at": now, "paused": False}
            registry.set_alias(self.client, self.model_name, registry.CHALLENGER, version)
            self.record_event("started", version, f"canary in slot {slot}", {"steps": self.steps})
        self.rollout.update(
            step=step,
            step_started_at=now,
            state=f"step {step + 1}/{len(self.steps)}: {self.steps[step]:g}% to v{version}",
            analysis=None,
            resumed=resumed,
        )
        self._bump()

    def promote(self, reason: str, numbers: dict) -> dict:
        ro = self._require_rollout()
        version, slot = ro["version"], ro["slot"]
        previous = self.champion
        registry.set_alias(self.client, self.model_name, registry.CHAMPION, version)
        registry.delete_alias(self.client, self.model_name, registry.CHALLENGER)
        now = self.wall()
        self.client.set_model_version_tag(
            self.model_name, version, "mlops.promoted_at", f"{now:.3f}"
        )
        self.client.set_model_version_tag(
            self.model_name, version, "mlops.promoted_reason", reason[:4000]
        )
        self.champion = version
        self.weights = {s: (1.0 if s == slot else 0.0) for s in SLOTS}
        self.rollout = None
        entry = self.record_event(
            "promoted", version, f"{reason} (previous champion v{previous})", numbers
        )
        self._bump()
        return entry

    def rollback(self, reason: str, numbers: dict) -> dict:
        ro = self._require_rollout()
        version = ro["version"]
        live = self.live_slot()
        self.weights = {s: (1.0 if s == live else 0.0) for s in SLOTS}
        self.rollout = None
        self._bump()  # traffic first: the registry writes below must not delay it
        registry.delete_alias(self.client, self.model_name, registry.CHALLENGER)
        record = json.dumps({"reason": reason, "numbers": numbers, "at": self.wall()})
        self.client.set_model_version_tag(self.model_name, version, "mlops.rejected", record[:4900])
        return self.record_event("rolled_back", version, reason, numbers)

    def set_paused(self, paused: bool) -> None:
        ro = self._require_rollout()
        ro["paused"] = paused
        ro["state"] = "paused" if paused else f"resumed at step {ro['step'] + 1}"
        if not paused:
            ro["step_started_at"] = self.wall()
        self._bump()

    def _require_rollout(self) -> dict:
        if self.rollout is None:
            raise RolloutError("no rollout in progress")
        return self.rollout
