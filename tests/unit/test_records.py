"""The router's record buffer stays bounded and counts what it drops."""

from deployments.records import RecordBuffer


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
