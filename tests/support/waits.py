"""Waiting in tests: for a condition (polled within a deadline), or on a schedule (a paced feed).
The only two places a test sleeps: a short sleep inside a polling loop is a wait for the
condition, not a guess at how long something takes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["paced", "wait_until"]

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """The first truthy value `condition()` returns; AssertionError naming `what` once `timeout`
    seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(interval)
    return value


def paced(items: Iterable[T], interval: float) -> Iterator[T]:
    """`items`, the k-th handed out `k * interval` seconds after the first (a live feed, not a
    burst; late items are not made up for by shorter gaps)."""
    due = time.monotonic()
    for item in items:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield item
        due = max(due, time.monotonic()) + interval
