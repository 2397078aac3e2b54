"""Helpers shared by the test suites."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.2,
    what: str = "",
    context: Callable[[], object] | None = None,
):
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` after ``timeout``,
    plus what ``context()`` returns then (the state that explains a timeout)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may raise while the system settles
            last_exc = exc
        time.sleep(interval)
    state = ""
    if context is not None:
        try:
            state = f"; state: {context()!r}"
        except Exception as exc:
            state = f"; state unavailable: {exc!r}"
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}: {last_exc!r}{state}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
