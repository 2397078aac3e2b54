"""Per-request slot choice: pinned version > sticky key > weighted random. No Ray, no I/O.

A `TrafficSplit` is built once per state change (by the router's follower task) and read on
every request, so a request costs a dict lookup and one random number.
"""

from __future__ import annotations

import bisect
import random
import zlib
from dataclasses import dataclass

SLOTS = ("blue", "green")

# Key of a ModelServer answer's replica-side timings (ms: waiting for the model pass, the
# pass, the whole call on the replica); the Router takes it out for its Server-Timing header.
TIMING = "_timing"


class UnknownVersion(LookupError):
    """A pinned version that no slot serves."""

    def __init__(self, version: str, live: list[str]):
        super().__init__(version)
        self.version = version
        self.live = live


class ModelError(RuntimeError):
    """The model raised on one request's rows (the others in its batch were answered)."""

    def __init__(self, version: str, cause: str):
        super().__init__(f"model v{version} failed: {cause}")
        self.version = version
        self.cause = cause

    def __reduce__(self):  # travels from a ModelServer replica to the router by pickle
        return (ModelError, (self.version, self.cause))


class StateUnknown(RuntimeError):
    """The controller has not read the registry since it started and has no provisional state:
    a router keeps the state it last applied rather than an empty one."""


class NoLiveModel(RuntimeError):
    """No slot has traffic weight (nothing registered yet, or everything idle)."""


@dataclass(frozen=True)
class TrafficSplit:
    """Slots with positive weight, their versions and cumulative weights."""

    slots: tuple[str, ...]
    versions: tuple[str, ...]
    cumulative: tuple[float, ...]
    by_version: dict[str, str]

    @classmethod
    def from_state(cls, slot_versions: dict[str, str | None], weights: dict[str, float]):
        live = [
            (s, slot_versions[s])
            for s in SLOTS
            if slot_versions.get(s) is not None and weights.get(s, 0.0) > 0
        ]
        total = sum(weights[s] for s, _ in live)
        cum, acc = [], 0.0
        for s, _ in live:
            acc += weights[s] / total
            cum.append(acc)
        if cum:
            cum[-1] = 1.0
        # A version can be pinned while its slot is loaded, even at weight 0 (shadow, warm-up).
        by_version = {v: s for s, v in slot_versions.items() if v is not None}
        return cls(
            slots=tuple(s for s, _ in live),
            versions=tuple(v for _, v in live),
            cumulative=tuple(cum),
            by_version=by_version,
        )

    @property
    def ready(self) -> bool:
        return bool(self.slots)

    def _at(self, u: float) -> tuple[str, str]:
        i = min(bisect.bisect_right(self.cumulative, u), len(self.slots) - 1)
        return self.slots[i], self.versions[i]

    def pick(
        self, pin: str | None = None, key: str | None = None, rng: random.Random | None = None
    ) -> tuple[str, str]:
        """Return (slot, version) for one request."""
        if pin is not None:
            slot = self.by_version.get(str(pin))
            if slot is None:
                raise UnknownVersion(str(pin), sorted(self.by_version))
            return slot, str(pin)
        if not self.slots:
            raise NoLiveModel()
        if len(self.slots) == 1:
            return self.slots[0], self.versions[0]
        if key is not None:
            # crc32 is stable across processes (hash() is salted per process).
            u = (zlib.crc32(key.encode()) % 1_000_003) / 1_000_003
        else:
            u = (rng or random).random()
        return self._at(u)
