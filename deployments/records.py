"""The router's bounded buffer of prediction records on their way to the DriftMonitor.

Appending never blocks and never grows past ``capacity`` records or ``max_bytes`` estimated
bytes: when either is reached, the oldest records are dropped and counted. A count bound alone
is not enough: a record holds up to a whole request's feature rows (1024 x 30 floats is about
245 kB), so 20,000 of them could hold gigabytes. The flusher takes batches off the front.
Plain Python, no Ray.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

DEFAULT_CAPACITY = 20_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# A record's dict, request id, version, timestamps and the feature array's header: about 520
# bytes measured with tracemalloc on records shaped like the router's, plus 112 for the numpy
# header, rounded up.
RECORD_OVERHEAD_BYTES = 700
# Per element of a list that is not a numpy array (a Python float or int in a list).
LIST_ITEM_BYTES = 32


def record_bytes(record: dict[str, Any]) -> int:
    """Estimated memory of one record: the fixed overhead plus its feature rows (numpy
    ``nbytes``, or a per-element estimate for Python lists) and its predictions."""
    size = RECORD_OVERHEAD_BYTES
    for key in ("features", "predictions"):
        value = record.get(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == "O":
            # A model with string columns: the pointers plus each cell's own object.
            size += value.nbytes + _objects_bytes(value)
        elif isinstance(value, np.ndarray):
            size += value.nbytes
        elif isinstance(value, (list, tuple)):
            size += LIST_ITEM_BYTES * _elements(value)
    return size


# A str object's header; its characters come on top (at most 256 per cell, see
# deployments.schemas.MAX_STRING_CHARS).
STR_OVERHEAD_BYTES = 49


def _objects_bytes(value: np.ndarray) -> int:
    """Estimated memory of the Python objects an object array points to."""
    return sum(
        STR_OVERHEAD_BYTES + len(v) if isinstance(v, str) else LIST_ITEM_BYTES for v in value.flat
    )


def _elements(value: list | tuple) -> int:
    n = 0
    for item in value:
        if isinstance(item, np.ndarray):
            n += item.size
        elif isinstance(item, (list, tuple)):
            n += len(item)
        else:
            n += 1
    return n


class RecordBuffer:
    """Bounded FIFO (by count and by estimated bytes) with drop accounting."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES):
        if capacity < 1 or max_bytes < 1:
            raise ValueError(f"capacity and max_bytes must be >= 1, got {capacity}, {max_bytes}")
        self._items: deque[tuple[dict[str, Any], int]] = deque()
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped = 0
        # Why records were dropped: "buffer_full" (count bound), "buffer_bytes" (byte bound),
        # "record_too_large" (one record above max_bytes on its own, never held).
        self.dropped_by_reason: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, record: dict[str, Any]) -> int:
        """Append ``record``; return how many records were dropped to make room (or the record
        itself when it alone is larger than ``max_bytes``). See `drops` for the reasons."""
        return sum(self.add_counted(record).values())

    def add_counted(self, record: dict[str, Any]) -> dict[str, int]:
        """Append ``record``; return what was dropped for it, by reason (empty when nothing)."""
        size = record_bytes(record)
        if size > self.max_bytes:
            return self._drop("record_too_large", 1)
        out: dict[str, int] = {}
        while self._items and len(self._items) >= self.capacity:
            self._pop()
            out["buffer_full"] = out.get("buffer_full", 0) + 1
        while self._items and self.bytes + size > self.max_bytes:
            self._pop()
            out["buffer_bytes"] = out.get("buffer_bytes", 0) + 1
        for reason, n in out.items():
            self._drop(reason, n)
        self._items.append((record, size))
        self.bytes += size
        return out

    def _pop(self) -> dict[str, Any]:
        record, size = self._items.popleft()
        self.bytes -= size
        return record

    def _drop(self, reason: str, n: int) -> dict[str, int]:
        self.dropped += n
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + n
        return {reason: n}

    def take(self, max_items: int) -> list[dict[str, Any]]:
        """Up to ``max_items`` records off the front, oldest first."""
        n = min(max_items, len(self._items))
        return [self._pop() for _ in range(n)]

    def pending(self) -> int:
        """Records still held: what is lost if the router stops now (report it as dropped
        with reason "router_stopped" when stopping)."""
        return len(self._items)

    def discard_pending(self) -> int:
        """Empty the buffer on shutdown and count the records as dropped ("router_stopped");
        return how many."""
        n = len(self._items)
        self._items.clear()
        self.bytes = 0
        if n:
            self._drop("router_stopped", n)
        return n
