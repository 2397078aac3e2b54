"""The monitor's row window: bounded, oldest dropped, and every row counted (the detectors'
"new rows since the last count" and the live reference's boundary read ``total``)."""

import numpy as np

from monitoring.windows import RowWindow


def test_a_batch_larger_than_the_window_keeps_its_newest_rows_and_counts_every_row():
    w = RowWindow(4)
    w.append(np.arange(6, dtype=float).reshape(3, 2), ["a", "b", "c"])
    w.append(np.arange(100, 112, dtype=float).reshape(6, 2), list("uvwxyz"))
    assert w.total == 9
    np.testing.assert_array_equal(w.features()[:, 0], [104, 106, 108, 110])
    assert w.predictions() == ["w", "x", "y", "z"]


def test_rows_beyond_capacity_push_out_the_oldest_in_order():
    w = RowWindow(3)
    for i in range(5):
        w.append(np.array([[float(i)]]), [i])
    assert w.total == 5
    np.testing.assert_array_equal(w.features()[:, 0], [2.0, 3.0, 4.0])
    assert w.predictions() == [2, 3, 4]
