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
        self._bump()

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
