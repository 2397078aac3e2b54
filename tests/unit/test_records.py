"""The router's record buffer stays bounded, by count and by bytes, and counts what it drops."""

import numpy as np
import pytest

from deployments.records import LIST_ITEM_BYTES, RECORD_OVERHEAD_BYTES, RecordBuffer, record_bytes


def test_buffer_is_bounded_drops_oldest_and_counts():
    buf = RecordBuffer(capacity=3)
    dropped = [buf.add({"i": i}) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert len(buf) == 3 and buf.dropped == 2
    assert [r["i"] for r in buf.take(10)] == [2, 3, 4]
    assert len(buf) == 0 and buf.take(5) == []


def test_take_respects_batch_size_in_order():
    buf = RecordBuffer(capacity=100)
    for i in range(10):
        buf.add({"i": i})
    assert [r["i"] for r in buf.take(4)] == [0, 1, 2, 3]
    assert [r["i"] for r in buf.take(100)] == [4, 5, 6, 7, 8, 9]


def test_defaults_bound_bytes_not_only_count():
    """20,000 records of 1024 x 30 floats would be about 4.9 GB: the default byte bound
    (64 MiB) holds a few hundred of them and drops the oldest, counted by reason."""
    buf = RecordBuffer()
    X = np.zeros((1024, 30))
    record_size = record_bytes({"features": X, "predictions": [0] * 1024})
    assert record_size >= X.nbytes
    dropped = sum(buf.add({"features": X, "predictions": [0] * 1024}) for _ in range(400))
    assert buf.bytes <= buf.max_bytes == 64 * 1024 * 1024
    assert len(buf) == buf.max_bytes // record_size
    assert dropped == 400 - len(buf) and buf.dropped_by_reason == {"buffer_bytes": dropped}


def test_byte_bound_drops_as_many_old_records_as_needed():
    small = record_bytes({"features": np.zeros((1, 4))})
    big = {"features": np.zeros((100, 4))}
    buf = RecordBuffer(capacity=100, max_bytes=record_bytes(big) + small)
    for i in range(3):
        buf.add({"i": i, "features": np.zeros((1, 4))})
    assert buf.add_counted(big) == {"buffer_bytes": 2}  # room for one small one beside it
    assert len(buf) == 2 and buf.bytes == record_bytes(big) + small
    assert [r.get("i") for r in buf.take(10)] == [2, None] and buf.bytes == 0


def test_a_record_larger_than_the_whole_budget_is_dropped_alone():
    buf = RecordBuffer(capacity=10, max_bytes=10_000)
    buf.add({"i": 0})
    assert buf.add_counted({"features": np.zeros((1000, 30))}) == {"record_too_large": 1}
    assert [r["i"] for r in buf.take(10)] == [0]
    assert buf.dropped == 1 and buf.dropped_by_reason == {"record_too_large": 1}


def test_python_lists_are_estimated_per_element():
    rows = [[0.0] * 30 for _ in range(10)]
    assert record_bytes({"features": rows}) == RECORD_OVERHEAD_BYTES + 300 * LIST_ITEM_BYTES


def test_pending_records_are_counted_when_the_router_stops():
    buf = RecordBuffer(capacity=10)
    for i in range(4):
        buf.add({"i": i})
    buf.take(1)
    assert buf.pending() == 3
    assert buf.discard_pending() == 3
    assert len(buf) == 0 and buf.bytes == 0 and buf.dropped_by_reason == {"router_stopped": 3}
    assert buf.discard_pending() == 0


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="max_bytes"):
        RecordBuffer(capacity=10, max_bytes=0)
