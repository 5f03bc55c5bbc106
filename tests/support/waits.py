"""Waiting in tests: for a condition, polled within a deadline, and a live feed that keeps in step
with its consumer. The only place a test sleeps: a short sleep inside the polling loop is a wait
for the condition, not a guess at how long something takes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TypeVar

__all__ = ["in_step", "wait_until"]

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """The first truthy value `condition()` returns; AssertionError naming `what` once `timeout`
    seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(interval)
    return value


def in_step(
    items: Iterable[T], handled: Callable[[int], bool], lead: int, timeout: float = 30.0
) -> Iterator[T]:
    """`items` as a live feed at its consumer's pace, not one burst and not on a clock: the k-th
    is handed out once `handled(k - lead)` holds (the consumer has dealt with the item `lead`
    places before it), so the feed never runs more than `lead` items ahead of it."""
    for k, item in enumerate(items):
        if k >= lead:
            done = partial(handled, k - lead)
            wait_until(done, timeout, f"the consumer of item {k - lead}", 0.002)
        yield item
