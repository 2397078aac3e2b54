"""The router's bounded buffer of prediction records on their way to the DriftMonitor.

Appending never blocks and never grows past ``capacity``: when full, the oldest record is
dropped and counted. The flusher takes batches off the front. Plain Python, no Ray.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class RecordBuffer:
    """Bounded FIFO with drop accounting."""

    def __init__(self, capacity: int):
        self._items: deque[dict[str, Any]] = deque()
        self.capacity = capacity
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, record: dict[str, Any]) -> int:
        """Append ``record``; return how many old records were dropped to make room (0 or 1)."""
        dropped = 0
        if len(self._items) >= self.capacity:
            self._items.popleft()
            dropped = 1
            self.dropped += 1
        self._items.append(record)
        return dropped

    def take(self, max_items: int) -> list[dict[str, Any]]:
        n = min(max_items, len(self._items))
        return [self._items.popleft() for _ in range(n)]
