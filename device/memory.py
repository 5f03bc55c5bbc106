"""Give the C heap's free memory back to the operating system, so the agent's RSS follows what it
holds now rather than the highest backlog it has ever caught up on.

A stall (a slow broker, a starved core) lets work pile up; catching up allocates more at once,
and glibc keeps what is freed inside its heap, below the top, for reuse. On a kiosk with little
memory that high-water mark is memory nobody uses. `malloc_trim(0)` hands every free page back
(MADV_DONTNEED), wherever it lies in the heap. Other C libraries (musl) have no such call and
this does nothing there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

__all__ = ["release_free_memory"]

logger = logging.getLogger(__name__)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        logger.info("this C library has no malloc_trim; freed heap memory stays with the agent")
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; True when the C library could (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
