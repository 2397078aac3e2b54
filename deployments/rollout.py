"""Desired serving state and the decisions that change it. Plain Python, no Ray.

The state is small: which version each slot serves, the traffic weights, and what is known of
those versions. It is rebuilt from the MLflow registry so a restarted controller, or a restarted
cluster, comes back to the same place. `RolloutController` (controller.py) wraps this in a Serve
deployment and does the waiting.

Durability and the commit point. The controller is the only writer of the ``champion`` and
``challenger`` aliases and of the rollout tags. A change is written in a fixed order: the
``champion`` alias (promotion only), the ``challenger`` alias, version tags (promoted / rejected),
the history, and LAST one registered-model tag, ``mlops.rollout``: a JSON record of the whole
state with an increasing ``seq``. That record is the commit point; `bootstrap` reads it as the
truth and reconciles the aliases to it, so a crash between any two writes leaves the old or the
new state, never a mix:

- ``challenger`` set but the record not written (a start cut short): the stray alias is deleted.
- ``challenger`` deleted but the record not written (a rollback cut short): the rollout stays
  over (a rollback never comes back to life).
- ``champion`` moved to the canary's version but the record not written (a promotion cut
  short): the promotion is completed.
- ``champion`` moved to any other version: an operator (or the first training) moved it
  outside the controller; it is adopted, as `/reload` would, and any rollout is abandoned.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException

from deployments.routing import SLOTS
from training import registry

log = logging.getLogger(__name__)

SLOT_TAG = "mlops.slot.{slot}"  # read only: state written before the single record existed
WEIGHTS_TAG = "mlops.weights"  # read only, as above
ROLLOUT_TAG = "mlops.rollout"
HISTORY_TAG = "mlops.history"
HISTORY_KEEP = 10
MAX_WEIGHT = 1e6  # weights are relative; anything larger is a typo or an attack
MAX_REASON_CHARS = 500


class RolloutError(ValueError):
    """A rollout request that cannot be carried out (the message says why)."""


class StaleRecord(RolloutError):
    """The rollout record in the registry was written by someone else since we read it."""


@dataclass
class ReplicaSeen:
    loaded: str | None
    at: float
    # Versions this replica refused to load: version -> {"kind": "refused" | "load_failed",
    # "reason": ...} (deployments.model_server; the artifact will not change, so neither will
    # the answer).
    refused: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class RegistryHealth:
    """Whether the registry answered the last call, since when, and the last outage's error."""

    wall: Any = time.time
    reachable: bool = True
    since: float = field(default_factory=time.time)
    last_error: str | None = None

    def ok(self) -> bool:
        """Record a successful call; True when this ends an outage."""
        if self.reachable:
            return False
        self.reachable, self.since = True, self.wall()
        return True

    def failed(self, exc: BaseException) -> bool:
        """Record a failed call; True when this starts an outage."""
        self.last_error = str(exc)[:500]
        if not self.reachable:
            return False
        self.reachable, self.since = False, self.wall()
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "since": round(self.since, 3),
            "last_error": self.last_error,
        }


def check_reason(reason: Any) -> str:
    """An operator's reason for a promotion or rollback: a string of bounded length."""
    if not isinstance(reason, str):
        raise RolloutError(
            f"reason must be a string of at most {MAX_REASON_CHARS} characters, "
            f"got {type(reason).__name__}"
        )
    if len(reason) > MAX_REASON_CHARS:
        raise RolloutError(
            f"reason must be at most {MAX_REASON_CHARS} characters, got {len(reason)}"
        )
    return reason


def check_weights(weights: Any, slots: dict[str, str | None]) -> dict[str, float]:
    """Validate hand-set weights against the slots; the normalised weights, or RolloutError.

    Refused: a non-object, unknown slots, non-numbers (booleans included), NaN, infinities,
    negatives, values above MAX_WEIGHT, weight on a slot that serves nothing, all zero.
    """
    expected = f'expected {{"blue": <weight>, "green": <weight>}} with numbers 0..{MAX_WEIGHT:g}'
    if not isinstance(weights, dict) or not weights:
        raise RolloutError(f"weights must be a non-empty object; {expected}")
    unknown = [s for s in weights if s not in SLOTS]
    if unknown:
        shown = sorted(str(s)[:40] for s in unknown)
        raise RolloutError(f"unknown slots {shown}; slots are {list(SLOTS)}")
    new = dict.fromkeys(SLOTS, 0.0)
    for s, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise RolloutError(
                f"weight of {s} must be a number, got {type(w).__name__}; {expected}"
            )
        try:
            f = float(w)
        except OverflowError:
            raise RolloutError(f"weight of {s} is out of range; {expected}") from None
        if not math.isfinite(f) or f < 0 or f > MAX_WEIGHT:
            raise RolloutError(f"weight of {s} is {f!r}; {expected}")
        new[s] = f
    for s, w in new.items():
        if w > 0 and slots.get(s) is None:
            raise RolloutError(f"slot {s} serves no version and cannot take traffic")
    total = sum(new.values())
    if total <= 0:
        raise RolloutError("at least one slot needs a positive weight")
    return {s: w / total for s, w in new.items()}


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
    # Durability: the record's seq last read or written, whether memory is ahead of the
    # registry, version tags still to write, and the aliases as last read or written.
    seq: int = 0
    dirty: bool = False
    pending_tags: list[tuple[str, str, str]] = field(default_factory=list)
    # False until the registry has been read once (or a provisional state adopted): a
    # controller that knows nothing must not publish "no model" to the routers.
    known: bool = False
    provisional: bool = False
    registry_health: RegistryHealth | None = None
    _champion_alias: str | None = None
    _challenger_alias: str | None = None

    def __post_init__(self) -> None:
        if self.registry_health is None:
            self.registry_health = RegistryHealth(wall=self.wall, since=self.wall())

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
            "loaded": self.loaded(),
            "registry_reachable": self.registry_health.reachable,
            "provisional": self.provisional,
            "load_errors": self.load_errors(),
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
    def record_replica(
        self,
        slot: str,
        replica_id: str,
        loaded: str | None,
        refused: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.replicas[slot][replica_id] = ReplicaSeen(loaded, self.clock(), dict(refused or {}))

    def load_errors(self) -> dict[str, dict[str, str]]:
        """Versions assigned to a slot that a live replica of that slot refused to load:
        version -> {"slot", "kind", "reason"}."""
        now = self.clock()
        out: dict[str, dict[str, str]] = {}
        for slot, version in self.slots.items():
            if version is None:
                continue
            for r in self.replicas[slot].values():
                if now - r.at <= self.heartbeat_ttl_s and version in r.refused:
                    out[version] = {"slot": slot, **r.refused[version]}
                    break
        return out

    def slot_refused(self, slot: str, version: str) -> str | None:
        """Why ``slot`` cannot serve ``version``: every live replica refused it; else None."""
        now = self.clock()
        alive = [r for r in self.replicas[slot].values() if now - r.at <= self.heartbeat_ttl_s]
        if alive and all(version in r.refused for r in alive):
            return alive[0].refused[version].get("reason", "refused at load")
        return None

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

    def loaded(self) -> dict[str, list[str]]:
        """Per slot, the versions some live replica of it has loaded: a router reports ready
        only once the champion's slot holds the champion (its first request would otherwise
        wait for the load)."""
        now = self.clock()
        return {
            slot: sorted(
                {
                    r.loaded
                    for r in self.replicas[slot].values()
                    if r.loaded is not None and now - r.at <= self.heartbeat_ttl_s
                }
            )
            for slot in SLOTS
        }

    def _slot_holds(self, slot: str) -> str | None:
        """The one version every live replica of ``slot`` reports loaded, else None."""
        now = self.clock()
        alive = {
            r.loaded for r in self.replicas[slot].values() if now - r.at <= self.heartbeat_ttl_s
        }
        return alive.pop() if len(alive) == 1 else None

    # ---- provisional state while the registry cannot be read ------------------------------
    def adopt_provisional(self, held: dict[str, Any] | None) -> bool:
        """Before the registry was ever read (a restart during an outage), adopt ``held``, a
        state a router last applied (slots, weights, champion, versions), marked provisional
        until the registry answers, so routers that start meanwhile have one too.

        It is adopted only when every slot it sends traffic to is held, by every replica of
        that slot heard from, at that version: a stale state is never published. Replica
        reports alone are not enough (they say what is loaded, not which one is champion,
        nor the versions' signatures). Returns whether a provisional state is now published.
        """
        if self.known or not isinstance(held, dict):
            return False
        try:
            slots = {s: held["slots"].get(s) for s in SLOTS}
            slots = {s: None if v is None else str(v) for s, v in slots.items()}
            weights = check_weights({s: held["weights"].get(s, 0.0) for s in SLOTS}, slots)
            champion = held.get("champion")
            versions = {v: dict(held["versions"][v]) for v in set(slots.values()) - {None}}
        except (RolloutError, KeyError, TypeError, AttributeError, ValueError):
            return False
        if champion not in slots.values() or not all(
            self._slot_holds(s) == slots[s] for s in SLOTS if weights[s] > 0
        ):
            return False
        self.slots, self.weights, self.champion = slots, weights, str(champion)
        for v, info in versions.items():
            self.versions.setdefault(v, info)
        self.rollout = None
        self.provisional = True
        self.known = True
        self._bump()
        log.warning(
            "registry unreadable since start: serving a provisional state a router held and "
            "the replicas confirm: slots %s, weights %s",
            self.slots,
            self.weights,
        )
        return True

    # ---- transitions ---------------------------------------------------------------------
    def _bump(self) -> None:
        self.epoch += 1

    def bump(self) -> None:
        """Publish the state again (something routers see besides it changed, e.g. the
        registry's reachability)."""
        self._bump()

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
        """Set weights by hand after `check_weights`; nothing changes when they are refused."""
        self.weights = check_weights(weights, self.slots)
        self._bump()

    # ---- checkpoints: an action that cannot be written is undone ---------------------------
    def checkpoint(self) -> dict[str, Any]:
        """The logical state, to `restore` when an action cannot be committed."""
        return copy.deepcopy(
            {
                "slots": self.slots,
                "weights": self.weights,
                "champion": self.champion,
                "rollout": self.rollout,
                "history": self.history,
                "pending_tags": self.pending_tags,
                "dirty": self.dirty,
            }
        )

    def restore(self, saved: dict[str, Any]) -> None:
        for k, v in copy.deepcopy(saved).items():
            setattr(self, k, v)
        # Aliases already moved by the failed commit are put back by the next commit.
        if (
            self._champion_alias != self.champion
            or self._challenger_alias != self._wanted_challenger()
        ):
            self.dirty = True
        self._bump()

    # ---- the durable record ----------------------------------------------------------------
    def _wanted_challenger(self) -> str | None:
        return self.rollout["version"] if self.rollout else None

    def record(self) -> dict[str, Any]:
        """The whole durable state, as written to ``mlops.rollout`` (without its seq)."""
        ro = self.rollout
        return {
            "champion": self.champion,
            "slots": dict(self.slots),
            "weights": dict(self.weights),
            "rollout": (
                {k: ro.get(k) for k in ("version", "slot", "step", "paused", "started_at")}
                if ro
                else None
            ),
        }

    def _read_seq(self) -> int:
        return _raw_seq(registry.model_tags(self.client, self.model_name).get(ROLLOUT_TAG))

    def persist(self) -> None:
        """Write the state to the registry in commit order (see the module docstring): aliases,
        version tags, history, and last the ``mlops.rollout`` record with the next ``seq``.

        A retreat (no rollout wanted, the champion unchanged: a rollback, an abandoned start)
        tries every write even if one fails, since any one of them (challenger alias gone,
        version tagged rejected, record without rollout) keeps it from coming back after a
        restart. Anything else stops at the first failure, so the record never gets ahead of
        the aliases.

        Raises `registry.RegistryUnavailable` (memory stays ahead, ``dirty``; call again) or
        `StaleRecord` when another writer committed a record since we read ours.
        """
        self.dirty = True
        name, client = self.model_name, self.client
        challenger = self._wanted_challenger()
        retreat = challenger is None and (
            self.champion is None or self._champion_alias == self.champion
        )
        failures: list[Exception] = []

        def attempt(write, *args) -> bool:
            try:
                write(*args)
                return True
            except registry.RegistryUnavailable as exc:
                if not retreat:
                    raise
                failures.append(exc)
                return False

        if self.champion is not None and self._champion_alias != self.champion:
            registry.set_alias(client, name, registry.CHAMPION, self.champion)
            self._champion_alias = self.champion
        if self._challenger_alias != challenger:
            if challenger is None:
                done = attempt(registry.delete_alias, client, name, registry.CHALLENGER)
            else:
                done = attempt(registry.set_alias, client, name, registry.CHALLENGER, challenger)
            if done:
                self._challenger_alias = challenger
        for tag in list(self.pending_tags):
            if attempt(registry.set_version_tag, client, name, *tag):
                self.pending_tags.remove(tag)
        attempt(self.persist_history)
        current = self._read_seq()
        if current != self.seq:
            raise StaleRecord(
                f"the rollout record moved to seq {current} (ours: {self.seq}): another "
                "controller wrote it; state will be re-read from the registry"
            )
        body = {"seq": self.seq + 1, **self.record()}
        registry.set_model_tag(client, name, ROLLOUT_TAG, json.dumps(body, sort_keys=True))
        self.seq += 1
        if failures:
            raise failures[0]
        self.dirty = False

    def persist_history(self) -> None:
        # MLflow tag values are bounded; keep the newest entries that fit.
        history = self.history
        while history and len(json.dumps(history)) > 4500:
            history = history[1:]
        registry.set_model_tag(self.client, self.model_name, HISTORY_TAG, json.dumps(history))

    # ---- bootstrap -------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Rebuild state from the registry: the ``mlops.rollout`` record is the truth and the
        aliases are reconciled to it (module docstring); without a record, the champion alias
        alone (older tags are honoured where the aliases agree with them).

        Every read happens before anything changes: `registry.RegistryUnavailable` leaves the
        current state as it was. Reconciling writes are tried once here; if the registry
        refuses them, ``dirty`` stays set and the controller retries `persist`.
        """
        name, client = self.model_name, self.client
        champion = registry.alias_version(client, name, registry.CHAMPION)
        challenger = registry.alias_version(client, name, registry.CHALLENGER)
        tags = registry.model_tags(client, name)
        events: list[tuple[str, str | None, str]] = []
        try:
            history = json.loads(tags.get(HISTORY_TAG) or "[]")
            history = history if isinstance(history, list) else []
        except ValueError:
            history = []
        raw = tags.get(ROLLOUT_TAG) or ""
        rec = _parse_record(raw)
        if rec is None:
            plan = self._plan_legacy(champion, challenger, tags, events)
        else:
            plan = self._plan_from_record(rec, champion, challenger, events)
        seq = _raw_seq(raw)
        # Describe every version the plan serves before adopting it (reads may fail).
        for v in set(plan["slots"].values()) - {None}:
            self.describe(v)
        write = (
            plan["champion"] != champion
            or plan["challenger"] != challenger
            or bool(events)
            or rec is None
            and bool(raw)
        )
        self.history = history
        self.champion = plan["champion"]
        self.slots = plan["slots"]
        self.weights = plan["weights"]
        self.rollout = plan["rollout"]
        self.seq = seq
        self._champion_alias = champion
        self._challenger_alias = challenger
        self.known, self.provisional = True, False
        for event, version, reason in events:
            self.record_event(event, version, reason, {})
        self._bump()
        if write and self.champion is not None:
            try:
                self.persist()
            except (registry.RegistryUnavailable, StaleRecord) as exc:
                log.warning("bootstrap: reconciling the registry failed (will retry): %s", exc)

    def _plan_empty(self, champion: str | None, live: str) -> dict[str, Any]:
        slots = dict.fromkeys(SLOTS)
        weights = dict.fromkeys(SLOTS, 0.0)
        if champion is not None:
            slots[live] = champion
            weights[live] = 1.0
        return {
            "champion": champion,
            "slots": slots,
            "weights": weights,
            "rollout": None,
            "challenger": None,
        }

    def _plan_legacy(self, champion, challenger, tags, events) -> dict[str, Any]:
        """No record (fresh registry, or state written by an older controller)."""
        tagged = {s: tags.get(SLOT_TAG.format(slot=s)) or None for s in SLOTS}
        live = next((s for s in SLOTS if tagged[s] == champion), SLOTS[0])
        plan = self._plan_empty(champion, live)
        raw = tags.get(ROLLOUT_TAG)
        if champion is None or not raw:
            return plan
        try:
            saved = json.loads(raw)
            saved = {
                "version": str(saved["version"]),
                "slot": saved["slot"],
                "step": int(saved["step"]),
                "paused": bool(saved.get("paused")),
                "started_at": None,
            }
        except (ValueError, KeyError, TypeError):
            events.append(("abandoned", None, f"unreadable rollout record {raw[:200]!r}"))
            return plan
        return self._plan_rollout(plan, saved, challenger, live, tags.get(WEIGHTS_TAG), events)

    def _plan_from_record(self, rec, champion, challenger, events) -> dict[str, Any]:
        rc, rr = rec["champion"], rec["rollout"]
        slots = rec["slots"]
        if champion is None:
            champion = rc  # deleted outside the controller (or never written): restore it
        elif champion != rc:
            if rr is not None and champion == rr["version"]:
                # The promotion moved the alias, then stopped before its record: finish it.
                events.append(
                    ("promoted", champion, "promotion completed after a restart (alias moved)")
                )
                slots = {s: (champion if s == rr["slot"] else slots.get(s)) for s in SLOTS}
            elif rr is not None:
                events.append(
                    (
                        "abandoned",
                        rr["version"],
                        f"champion alias moved outside the controller to v{champion}",
                    )
                )
            rr = None
        live = next((s for s in SLOTS if slots.get(s) == champion), SLOTS[0])
        plan = self._plan_empty(champion, live)
        if rr is None or champion is None:
            return plan
        return self._plan_rollout(plan, rr, challenger, live, rec["weights"], events)

    def _plan_rollout(self, plan, saved, challenger, live, saved_weights, events):
        """Resume the recorded rollout if the aliases still agree with it; otherwise record
        that it is over and stay on the champion alone (the safe state)."""
        version, slot = saved["version"], saved["slot"]
        if (
            challenger != version
            or slot == live
            or slot not in SLOTS
            or version == plan["champion"]
        ):
            events.append(
                (
                    "abandoned",
                    version,
                    f"rollout record (v{version} in {slot}) disagrees with the registry "
                    f"(challenger alias: {challenger}); serving the champion alone",
                )
            )
            return plan
        try:
            rejected_at = self._rejected_at(version)
        except MlflowException as exc:  # the version was deleted from the registry
            events.append(("abandoned", version, f"v{version} is gone from the registry: {exc}"))
            return plan
        if rejected_at is not None and rejected_at >= (saved.get("started_at") or 0):
            events.append(("abandoned", version, f"v{version} was rolled back; not resumed"))
            return plan
        resume_weights = None
        if saved["paused"]:
            try:
                resume_weights = _saved_weights(saved_weights, live, slot)
            except RolloutError as exc:
                # Safe state: the paused canary stays loaded but gets no traffic.
                resume_weights = {live: 1.0, slot: 0.0}
                events.append(
                    ("invalid_weights", version, f"stored weights refused ({exc}); champion alone")
                )
        plan["slots"][slot] = version
        plan["challenger"] = version
        plan["rollout"] = {
            "version": version,
            "slot": slot,
            "step": max(0, min(int(saved["step"]), len(self.steps) - 1)),
            "paused": bool(saved["paused"]),
            "started_at": saved.get("started_at") or self.wall(),
            "step_started_at": self.wall(),
            "state": "resumed after restart: waiting for the slot to load",
            "analysis": None,
            "resumed": True,
            # Weights set by hand (which pause the rollout) come back as they were.
            "resume_weights": resume_weights,
        }
        return plan

    def _rejected_at(self, version: str) -> float | None:
        raw = self.describe(version).get("tags", {}).get("mlops.rejected")
        try:
            return float(json.loads(raw)["at"]) if raw else None
        except (ValueError, KeyError, TypeError):
            return 0.0  # rejected, time unknown: treat as rejected

    def finish_resume(self) -> None:
        """The resumed challenger's slot has loaded: give it its traffic back (the step's
        share, or the hand-set weights of a paused rollout); the step's evidence restarts."""
        ro = self._require_rollout()
        weights = ro.pop("resume_weights", None)
        self.enter_step(ro["version"], ro["slot"], ro["step"])
        if ro["paused"]:
            if weights is not None:
                self.weights = {s: weights.get(s, 0.0) for s in SLOTS}
            ro["state"] = f"paused at step {ro['step'] + 1} (resumed after restart)"

    def plan_reload(self) -> tuple[str, str] | None:
        """If alias ``champion`` moved, the (idle slot, new version) to load; else None."""
        champion = registry.alias_version(self.client, self.model_name, registry.CHAMPION)
        if champion is None or champion == self.champion and self.live_slot() is not None:
            return None
        return self.idle_slot(), champion

    def cut_over(self, slot: str, version: str) -> None:
        """``slot`` has ``version`` loaded everywhere: it takes all traffic and is champion.
        The alias already says so (a reload follows it), so it is not written again."""
        self.champion = version
        self._champion_alias = version
        self.weights = {s: (1.0 if s == slot else 0.0) for s in SLOTS}
        self.dirty = True
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

    def begin_rollout(self, version: str) -> str:
        """Check that ``version`` can be rolled out; return the idle slot to load it into."""
        version = str(version)
        if self.provisional:
            raise RolloutError(
                "the registry has not been read since the controller started; retry when it answers"
            )
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
            self.record_event("started", version, f"canary in slot {slot}", {"steps": self.steps})
        self.rollout.update(
            step=step,
            step_started_at=now,
            state=f"step {step + 1}/{len(self.steps)}: {self.steps[step]:g}% to v{version}",
            analysis=None,
            resumed=resumed,
        )
        self.dirty = True
        self._bump()

    def promote(self, reason: str, numbers: dict) -> dict:
        """Make the challenger champion, in memory; `persist` writes it (champion alias first,
        the record last). Refused before anything moves if there is no rollout or ``reason``
        is not a string."""
        if not isinstance(reason, str):
            check_reason(reason)
        ro = self._require_rollout()
        version, slot = ro["version"], ro["slot"]
        previous = self.champion
        now = self.wall()
        self.pending_tags += [
            (version, "mlops.promoted_at", f"{now:.3f}"),
            (version, "mlops.promoted_reason", reason[:4000]),
        ]
        self.champion = version
        self.weights = {s: (1.0 if s == slot else 0.0) for s in SLOTS}
        self.rollout = None
        entry = self.record_event(
            "promoted", version, f"{reason} (previous champion v{previous})", numbers
        )
        self.dirty = True
        self._bump()
        return entry

    def rollback(self, reason: str, numbers: dict) -> dict:
        """All traffic back to the champion, in memory; `persist` deletes the challenger alias
        first, so a rollback cut short by a crash stays a rollback."""
        if not isinstance(reason, str):
            check_reason(reason)
        ro = self._require_rollout()
        version = ro["version"]
        live = self.live_slot()
        self.weights = {s: (1.0 if s == live else 0.0) for s in SLOTS}
        self.rollout = None
        record = json.dumps({"reason": reason, "numbers": numbers, "at": self.wall()})
        self.pending_tags.append((version, "mlops.rejected", record[:4900]))
        entry = self.record_event("rolled_back", version, reason, numbers)
        self.dirty = True
        self._bump()
        return entry

    def set_paused(self, paused: bool) -> None:
        ro = self._require_rollout()
        ro["paused"] = paused
        ro["state"] = "paused" if paused else f"resumed at step {ro['step'] + 1}"
        if not paused:
            ro["step_started_at"] = self.wall()
        self.dirty = True
        self._bump()

    def _require_rollout(self) -> dict:
        if self.rollout is None:
            raise RolloutError("no rollout in progress")
        return self.rollout


def _parse_record(raw: str) -> dict[str, Any] | None:
    """The ``mlops.rollout`` record, or None when there is none (or only an older format)."""
    if not raw:
        return None
    try:
        rec = json.loads(raw)
        if not isinstance(rec, dict) or "seq" not in rec:
            return None
        slots = rec.get("slots") or {}
        rr = rec.get("rollout")
        return {
            "seq": int(rec["seq"]),
            "champion": None if rec.get("champion") is None else str(rec["champion"]),
            "slots": {s: (None if slots.get(s) is None else str(slots[s])) for s in SLOTS},
            "weights": rec.get("weights"),
            "rollout": (
                {
                    "version": str(rr["version"]),
                    "slot": rr["slot"],
                    "step": int(rr["step"]),
                    "paused": bool(rr.get("paused")),
                    "started_at": rr.get("started_at"),
                }
                if rr
                else None
            ),
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _saved_weights(raw: Any, live: str, slot: str) -> dict[str, float] | None:
    """Weights stored for a paused rollout, validated as hand-set weights are; RolloutError when
    they are unusable (the caller falls back to the champion alone and reports it)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw or "{}")
        except ValueError:
            raise RolloutError(f"unreadable weights {raw[:100]!r}") from None
    if not raw:
        return None
    if not isinstance(raw, dict) or set(raw) - {live, slot}:
        raise RolloutError(f"weights {str(raw)[:100]} do not match slots {live}, {slot}")
    return check_weights(raw, {live: "live", slot: "canary"})


def _raw_seq(raw: str | None) -> int:
    """The ``seq`` of a stored record (0 for none, an older format or an unreadable one)."""
    try:
        return int(json.loads(raw)["seq"]) if raw else 0
    except (ValueError, KeyError, TypeError, OverflowError):
        return 0
