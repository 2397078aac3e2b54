"""Bounded windows the DriftMonitor keeps in memory: recent rows per model version, recent
labelled rows, and the request-id index that joins ``/feedback`` labels to predictions.

Every structure has a fixed capacity (from `configs.DriftConfig`) and drops its oldest entries
when full, so memory does not grow with traffic. Plain Python and numpy, no Ray.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import numpy as np


def feature_matrix(values: Any) -> tuple[np.ndarray, frozenset[int]]:
    """Feature rows as a float matrix, and the indices of its string columns.

    A model whose signature has string (categorical) columns sends object rows (``str`` and
    ``float`` cells; a reference frame read from a dataset too): its string columns become
    NaN here, and the detectors skip them (KS and PSI compare numbers). Numeric rows convert
    as ``np.asarray(values, dtype=float)`` does. Raises ValueError or TypeError for rows that
    are neither."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.dtype.kind not in "OUS":
        return arr.astype(float, copy=False), frozenset()
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 2:
        arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
    if arr.ndim != 2:
        raise ValueError(f"expected rows x features, got {arr.ndim}-D")
    strings = frozenset(
        j for j in range(arr.shape[1]) if any(isinstance(v, str) for v in arr[:, j])
    )
    out = np.full(arr.shape, np.nan)
    numeric = [j for j in range(arr.shape[1]) if j not in strings]
    out[:, numeric] = arr[:, numeric].astype(float)
    return out, strings


class RowWindow:
    """The newest ``capacity`` rows (features and the prediction for each row), in order.

    A numpy ring buffer: appending is O(rows), the width is fixed by the first row appended.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._X: np.ndarray | None = None
        self._pred: list[Any] = [None] * capacity
        self._next = 0  # slot the next row goes to
        self._size = 0
        self.total = 0  # rows ever appended, so callers can tell how many are new

    def __len__(self) -> int:
        return self._size

    @property
    def n_features(self) -> int | None:
        """Row width, fixed by the first append; None while empty."""
        return None if self._X is None else self._X.shape[1]

    def append(self, X: np.ndarray, predictions: list[Any]) -> None:
        """Append rows ``X`` (rows x features) with one prediction each."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or len(predictions) != len(X):
            raise ValueError("append needs a 2-D array and one prediction per row")
        if self._X is None:
            self._X = np.empty((self.capacity, X.shape[1]))
        elif X.shape[1] != self._X.shape[1]:
            raise ValueError(f"{X.shape[1]} features, this window holds {self._X.shape[1]}")
        if len(X) > self.capacity:
            self.total += len(X) - self.capacity  # rows that pass through without a place
            X, predictions = X[-self.capacity :], predictions[-self.capacity :]
        idx = (self._next + np.arange(len(X))) % self.capacity
        self._X[idx] = X
        for i, pred in zip(idx.tolist(), predictions, strict=True):
            self._pred[i] = pred
        self._next = (self._next + len(X)) % self.capacity
        self._size = min(self._size + len(X), self.capacity)
        self.total += len(X)

    def _order(self) -> np.ndarray:
        start = (self._next - self._size) % self.capacity
        return (start + np.arange(self._size)) % self.capacity

    def features(self) -> np.ndarray:
        """The rows, oldest first (a copy)."""
        if self._X is None:
            return np.empty((0, 0))
        return self._X[self._order()]

    def predictions(self) -> list[Any]:
        """The predictions, oldest first."""
        return [self._pred[i] for i in self._order()]

    def clear(self) -> None:
        """Forget the rows (the width and ``total`` stay)."""
        self._next = self._size = 0
        self._pred = [None] * self.capacity


@dataclass
class Labelled:
    """One row with its prediction and the ground truth sent later to ``/feedback``.

    ``source`` is the label source (the credential the router accepted the label under);
    ``pinned`` says the request pinned its model version, so it is left out of the canary
    comparison."""

    features: np.ndarray
    prediction: Any
    label: Any
    ts: float
    source: str = "default"
    pinned: bool = False

    @property
    def correct(self) -> bool:
        """Whether the prediction matched the label."""
        return self.prediction == self.label

    @property
    def abs_error(self) -> float | None:
        """``|prediction - label|`` when both are finite real numbers (a regressor's row),
        else None (class labels, booleans, a pyfunc's dict or list)."""
        return abs_error(self.prediction, self.label)


def as_real(value: Any) -> float | None:
    """``value`` as a finite float when it is a real number (not a bool), else None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def abs_error(prediction: Any, label: Any) -> float | None:
    """``|prediction - label|`` when both are finite real numbers, else None."""
    p, y = as_real(prediction), as_real(label)
    return None if p is None or y is None else abs(p - y)


class LabelWindow:
    """The newest ``capacity`` labelled rows, in order of arrival of the label, with a limit on
    how much of the window one label source may hold.

    ``source_limit(source)`` (from `append`'s arguments) is how many rows ``source`` may hold:
    ``max_per_source`` when given, and, while the window holds rows of any other source,
    ``max_share`` of ``capacity``. A row from a source at its limit replaces that source's own
    oldest row instead of the window's oldest, so one source cannot push the others' labels out;
    `append` says when that happened (the monitor counts it per source). With a single source
    and no ``max_per_source`` the window is a plain FIFO.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[Labelled] = deque()
        self._by_source: dict[str, int] = {}
        self.total = 0

    def __len__(self) -> int:
        return len(self._items)

    def source_limit(
        self, source: str, max_share: float = 1.0, max_per_source: int | None = None
    ) -> int:
        """Rows ``source`` may hold in the window right now (see the class docstring)."""
        limit = self.capacity if max_per_source is None else min(self.capacity, max_per_source)
        others = len(self._items) - self._by_source.get(source, 0)
        if others > 0:
            limit = min(limit, max(1, math.floor(max_share * self.capacity)))
        return limit

    def append(
        self, item: Labelled, max_share: float = 1.0, max_per_source: int | None = None
    ) -> bool:
        """Add one labelled row; return True when it replaced an older row of its own source
        (the source was at its limit), False when it took a free place or the window's
        oldest row's."""
        source = item.source
        displaced = False
        limit = self.source_limit(source, max_share, max_per_source)
        # A limit of the whole capacity is no limit: the plain FIFO below handles a full window.
        if limit < self.capacity and self._by_source.get(source, 0) >= limit:
            for i, old in enumerate(self._items):
                if old.source == source:
                    del self._items[i]
                    self._count(source, -1)
                    displaced = True
                    break
        if len(self._items) >= self.capacity:
            self._count(self._items.popleft().source, -1)
        self._items.append(item)
        self._count(source, 1)
        self.total += 1
        return displaced

    def _count(self, source: str, n: int) -> None:
        left = self._by_source.get(source, 0) + n
        if left > 0:
            self._by_source[source] = left
        else:
            self._by_source.pop(source, None)

    def sources(self) -> dict[str, int]:
        """Rows per label source in the window."""
        return dict(self._by_source)

    def items(self) -> list[Labelled]:
        """The labelled rows, oldest first."""
        return list(self._items)

    def correct(self) -> int:
        """How many rows in the window were predicted right."""
        return sum(1 for it in self._items if it.correct)

    def clear(self) -> None:
        """Forget the labelled rows (``total`` stays)."""
        self._items.clear()
        self._by_source.clear()


@dataclass
class Pending:
    """A prediction waiting for its label: what ``/feedback`` joins against."""

    version: str
    features: np.ndarray  # rows x features
    predictions: list[Any]
    ts: float
    labelled: bool = False
    pinned: bool = False  # the request pinned its model version (not in canary numbers)

    @property
    def rows(self) -> int:
        """Rows in the request (one label is expected per row)."""
        return len(self.predictions)


class RequestIndex:
    """request_id -> `Pending`, bounded by total rows held and by age.

    Entries are kept in insertion order, which is time order, so eviction of the oldest (when
    more than ``max_rows`` rows are held) and expiry (older than ``ttl_s``) both work from the
    front. A labelled entry stays until it ages out so that a second label for the same
    request is recognised as a duplicate rather than as unknown.
    """

    def __init__(self, max_rows: int, ttl_s: float):
        if max_rows < 1 or ttl_s <= 0:
            raise ValueError("RequestIndex needs max_rows >= 1 and ttl_s > 0")
        self.max_rows = max_rows
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, Pending] = OrderedDict()
        self.rows = 0
        self.evicted = 0  # entries dropped because the index was full
        self.expired = 0  # entries dropped because they were older than ttl_s

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._items

    def put(self, request_id: str, entry: Pending, now: float) -> None:
        """Store ``entry``; a request id seen again replaces the earlier entry."""
        if entry.rows > self.max_rows:
            # Too big to keep at all; counted so the loss is visible.
            self.evicted += 1
            return
        old = self._items.pop(request_id, None)
        if old is not None:
            self.rows -= old.rows
        self._items[request_id] = entry
        self.rows += entry.rows
        self.expire(now)
        while self.rows > self.max_rows:
            _, dropped = self._items.popitem(last=False)
            self.rows -= dropped.rows
            self.evicted += 1

    def expire(self, now: float) -> int:
        """Drop entries older than ``ttl_s``; return how many."""
        n = 0
        while self._items:
            rid, entry = next(iter(self._items.items()))
            if now - entry.ts <= self.ttl_s:
                break
            self._items.popitem(last=False)
            self.rows -= entry.rows
            n += 1
        self.expired += n
        return n

    def get(self, request_id: str, now: float) -> Pending | None:
        """The live entry for ``request_id``, or None when unknown, evicted or expired."""
        entry = self._items.get(request_id)
        if entry is None:
            return None
        if now - entry.ts > self.ttl_s:
            # Out-of-order timestamps can leave an old entry behind a newer one.
            del self._items[request_id]
            self.rows -= entry.rows
            self.expired += 1
            return None
        return entry
