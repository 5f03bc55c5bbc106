"""Symbol-affine partitions: which agent of a pool of `count` serves a symbol.

The owner of a symbol is `crc32(symbol.encode("utf-8")) % count` (zlib's CRC-32, the one in
gzip and PNG): stable across processes, machines and Python versions, unlike `hash()`. Every
agent of a pool subscribes to all of `market/+/bar` and forecasts only the symbols it owns, so
every bar of a symbol reaches the same agent on any MQTT v5 broker (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["Partition", "owner"]


def owner(symbol: str, count: int) -> int:
    """The index (0 .. count-1) of the pool member that serves `symbol`."""
    if count < 1:
        raise ValueError(f"a pool has at least one member, not {count}")
    return zlib.crc32(symbol.encode("utf-8")) % count


@dataclass(frozen=True)
class Partition:
    """This agent's share of the pool: member `index` of `count` (0 of 1: every symbol)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition index {self.index} is not in 0..{self.count - 1}")

    def owns(self, symbol: str) -> bool:
        return self.count == 1 or owner(symbol, self.count) == self.index
