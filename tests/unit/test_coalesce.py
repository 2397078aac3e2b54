"""The router's Coalescer: alone at once, together under load, errors kept to their request."""

import asyncio

import numpy as np
import pytest

from deployments.coalesce import Coalescer


class Slot:
    """Stands in for the ModelServer call: records each call, answers after ``delay``."""

    def __init__(self, delay=0.05, fail_rows=None, fail_call=False):
        self.calls: list[tuple[str, list[int]]] = []
        self.delay, self.fail_rows, self.fail_call = delay, fail_rows, fail_call

    async def send(self, version, Xs):
        self.calls.append((version, [len(x) for x in Xs]))
        await asyncio.sleep(self.delay)
        if self.fail_call:
            raise RuntimeError("replica died")
        return [
            ValueError("bad rows") if len(x) == self.fail_rows else {"n": len(x), "v": version}
            for x in Xs
        ]


def rows(n):
    return np.zeros((n, 3))


def run(coro):
    return asyncio.run(coro)


def test_a_request_alone_goes_at_once_in_its_own_call():
    slot = Slot(delay=0)

    async def main():
        c = Coalescer(slot.send, lambda: 2, max_rows=100)
        return [await c.submit("1", rows(1)) for _ in range(3)]

    assert run(main()) == [{"n": 1, "v": "1"}] * 3
    assert slot.calls == [("1", [1]), ("1", [1]), ("1", [1])]


def test_requests_arriving_while_the_calls_are_busy_leave_together():
    slot = Slot(delay=0.05)

    async def main():
        c = Coalescer(slot.send, lambda: 1, max_rows=100)
        first = asyncio.ensure_future(c.submit("1", rows(1)))
        await asyncio.sleep(0.01)  # the first call is in flight
        rest = [asyncio.ensure_future(c.submit("1", rows(2))) for _ in range(5)]
        await asyncio.sleep(0)
        assert c.queued == 5 and c.in_flight == 1
        return await first, await asyncio.gather(*rest), c

    first, rest, c = run(main())
    assert first == {"n": 1, "v": "1"} and rest == [{"n": 2, "v": "1"}] * 5
    assert slot.calls == [("1", [1]), ("1", [2, 2, 2, 2, 2])]


def test_a_failing_request_fails_alone_and_a_failed_call_fails_its_requests():
    slot = Slot(delay=0.02, fail_rows=3)

    async def main():
        c = Coalescer(slot.send, lambda: 1, max_rows=100)
        blocker = asyncio.ensure_future(c.submit("1", rows(1)))
        await asyncio.sleep(0.005)
        good = asyncio.ensure_future(c.submit("1", rows(2)))
        bad = asyncio.ensure_future(c.submit("1", rows(3)))
        await blocker
        assert await good == {"n": 2, "v": "1"}
        with pytest.raises(ValueError, match="bad rows"):
            await bad
        slot.fail_call = True
        results = await asyncio.gather(
            c.submit("1", rows(1)), c.submit("1", rows(1)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)

    run(main())


def test_calls_keep_to_one_version_and_the_row_bound():
    slot = Slot(delay=0.02)

    async def main():
        c = Coalescer(slot.send, lambda: 1, max_rows=5)
        blocker = asyncio.ensure_future(c.submit("1", rows(1)))
        await asyncio.sleep(0.005)
        waiting = [
            asyncio.ensure_future(c.submit(v, rows(n)))
            for v, n in [("1", 2), ("1", 2), ("1", 2), ("2", 1), ("1", 9)]
        ]
        await blocker
        await asyncio.gather(*waiting)

    run(main())
    # 2+2 fit in 5 rows, the third 2 starts the next call; v2 goes alone; 9 rows go alone.
    assert slot.calls == [("1", [1]), ("1", [2, 2]), ("1", [2]), ("2", [1]), ("1", [9])]


def test_the_limit_is_read_when_a_call_could_start():
    slot = Slot(delay=0.03)
    limit = {"n": 1}

    async def main():
        c = Coalescer(slot.send, lambda: limit["n"], max_rows=100)
        first = asyncio.ensure_future(c.submit("1", rows(1)))
        await asyncio.sleep(0.005)
        limit["n"] = 3  # the slot scaled up: two more calls may start at once
        more = [asyncio.ensure_future(c.submit("1", rows(1))) for _ in range(2)]
        await asyncio.sleep(0.005)
        assert c.in_flight == 3
        await asyncio.gather(first, *more)

    run(main())
    assert slot.calls == [("1", [1]), ("1", [1]), ("1", [1])]
