"""Counters and latency percentiles the agent reports in its status heartbeat."""

from __future__ import annotations

import numpy as np

__all__ = ["COUNTERS", "LatencyWindow"]

# Counted since the agent started (see docs/ARCHITECTURE.md, "Agent status").
COUNTERS = (
    "received",
    "forecasts",
    "dead_letters",
    "redelivered",
    "spooled",
    "dropped",
    "errors",
    "not_owned",  # bars of symbols another pool member serves (device/partition.py)
    "seq_gaps",
)


class LatencyWindow:
    """The last `size` samples in a fixed ring buffer, so percentiles follow recent behaviour."""

    def __init__(self, size: int = 4096) -> None:
        self._values = np.zeros(size, dtype=np.float64)
        self._next = 0
        self._count = 0

    def add(self, value: float) -> None:
        self._values[self._next] = value
        self._next = (self._next + 1) % len(self._values)
        self._count = min(self._count + 1, len(self._values))

    def percentiles(self, prefix: str = "") -> dict[str, float]:
        """`{prefix}p50` and `{prefix}p99`, or nothing before the first sample."""
        if not self._count:
            return {}
        p50, p99 = np.percentile(self._values[: self._count], [50, 99])
        return {f"{prefix}p50": round(float(p50), 4), f"{prefix}p99": round(float(p99), 4)}
