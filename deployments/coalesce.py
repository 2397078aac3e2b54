"""Router-side coalescing: concurrent requests for one slot travel to it as one call.

A call from the router to a ModelServer costs far more CPU than the model does for a cheap
model (Serve's handle, gRPC, pickling on the router; request handling on the replica): a
profile under single-row load put it at over half of the CPU of both deployments. The
`Coalescer` keeps at most ``limit()`` calls in flight to its slot. A request that finds a free
call goes at once, alone (no added latency at low load); requests that arrive while every call
is busy wait in a queue and leave together, as one call, when the next call frees up. Under
load, the calls carry as many requests as arrived during one call's round trip.

Plain asyncio, no Ray: the router gives it the function that makes the call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

Send = Callable[[str, list[np.ndarray]], Awaitable[list[Any]]]


class Coalescer:
    """Joins concurrent requests for one slot into shared calls; see module docstring.

    ``send(version, [X, ...])`` makes one call and returns one result per ``X``, in order; a
    result that is an exception fails only its own request. ``limit()`` is read each time a
    call could start, so it can follow the slot's replica count. ``max_rows`` bounds the rows
    of one call (a request larger than that still goes, alone).
    """

    def __init__(self, send: Send, limit: Callable[[], int], max_rows: int):
        self._send = send
        self._limit = limit
        self._max_rows = max_rows
        self._queue: deque[tuple[str, np.ndarray, asyncio.Future]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        """Calls on their way to the slot now."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Requests waiting for a call."""
        return len(self._queue)

    async def submit(self, version: str, X: np.ndarray) -> Any:
        """Predict ``X`` with ``version``; returns this request's result (or raises its error)."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((version, X, fut))
        self._pump()
        result = await fut
        if isinstance(result, BaseException):
            raise result
        return result

    def _pump(self) -> None:
        while self._queue and self._in_flight < max(1, self._limit()):
            version = self._queue[0][0]
            batch: list[tuple[str, np.ndarray, asyncio.Future]] = []
            rows = 0
            while self._queue and self._queue[0][0] == version:
                n = len(self._queue[0][1])
                if batch and rows + n > self._max_rows:
                    break
                item = self._queue.popleft()
                if item[2].done():  # its client went away while it waited
                    continue
                batch.append(item)
                rows += n
            if not batch:
                continue
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(version, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, version: str, batch: list[tuple[str, np.ndarray, asyncio.Future]]):
        try:
            results = await self._send(version, [x for _, x, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} requests")
            for (_, _, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
        except asyncio.CancelledError:
            for _, _, fut in batch:
                fut.cancel()
            raise
        except Exception as exc:  # the call itself failed: every request in it did
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._pump()
