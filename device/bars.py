"""Input bars: validation into `Bar` (or a dead-letter reason) and the rolling window per symbol."""

from __future__ import annotations

from enum import Enum

import numpy as np
from pydantic import ValidationError

from device.configio import describe_validation
from device.errors import PayloadError
from device.outbox import WindowState
from device.schemas import Bar

__all__ = ["SeqCheck", "SymbolWindow", "check_seq", "parse_bar", "validation_reason"]


def validation_reason(what: str, exc: ValidationError) -> str:
    """One line naming every invalid field, e.g. `invalid bar: close: must be greater than 0`."""
    return f"invalid {what}: {describe_validation(exc)}"


def parse_bar(payload: bytes, topic_symbol: str, accepted: frozenset[str] | None) -> Bar:
    """A valid bar for `topic_symbol`, or PayloadError with the reason for the dead letter."""
    try:
        bar = Bar.model_validate_json(payload)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise PayloadError(f"malformed JSON: {exc.errors()[0]['msg']}") from exc
        raise PayloadError(validation_reason("bar", exc)) from exc
    if bar.symbol != topic_symbol:
        raise PayloadError(f"symbol {bar.symbol!r} in the payload differs from the topic's")
    if accepted is not None and bar.symbol not in accepted:
        raise PayloadError(f"unknown symbol {bar.symbol!r}: this agent serves {sorted(accepted)}")
    return bar


class SeqCheck(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"


def check_seq(last_seq: int | None, seq: int) -> SeqCheck:
    if last_seq is None or seq > last_seq:
        return SeqCheck.NEW
    return SeqCheck.DUPLICATE if seq == last_seq else SeqCheck.OUT_OF_ORDER


class SymbolWindow:
    """The latest `capacity` closes of one symbol in a reused buffer, oldest first."""

    __slots__ = (
        "capacity",
        "closes",
        "count",
        "filled",
        "gap_at",
        "last_seq",
        "last_ts",
        "model_input",
        "symbol",
    )

    def __init__(self, symbol: str, capacity: int) -> None:
        self.symbol = symbol
        self.capacity = capacity
        self.closes = np.zeros(capacity, dtype=np.float64)
        # The float32 `[1, capacity]` array models read; kept in step with `closes`.
        self.model_input = np.zeros((1, capacity), dtype=np.float32)
        self.filled = 0  # valid closes at the end of the buffer
        self.count = 0  # bars accepted since the symbol was first seen
        # `count` of the latest bar whose seq skipped numbers (0: none since the start).
        self.gap_at = 0
        self.last_seq: int | None = None
        self.last_ts = ""

    @property
    def last_close(self) -> float:
        return float(self.closes[-1])

    def push(self, seq: int, ts: str, close: float) -> bool:
        """Append a bar (its seq above `last_seq`); True when its seq skipped numbers."""
        gap = self.last_seq is not None and seq > self.last_seq + 1
        if self.capacity:
            self.closes[:-1] = self.closes[1:]
            self.closes[-1] = close
            self.model_input[0, :-1] = self.model_input[0, 1:]
            self.model_input[0, -1] = close
            self.filled = min(self.filled + 1, self.capacity)
        self.count += 1
        if gap:
            self.gap_at = self.count
        self.last_seq = seq
        self.last_ts = ts
        return gap

    def ready(self, window: int) -> bool:
        return self.filled >= window

    def has_gap(self, window: int) -> bool:
        """Whether the last `window` closes straddle a seq gap (known since this process started)."""
        return self.gap_at > max(0, self.count - window + 1)

    def latest(self, window: int) -> np.ndarray:
        """The last `window` closes as a `[1, window]` float32 view (valid until the next push)."""
        return self.model_input[:, self.capacity - window :]

    def resize(self, capacity: int) -> None:
        """Keep the newest closes in a buffer of another length (a model with a longer window)."""
        keep = min(self.filled, capacity)
        kept = self.closes[self.capacity - keep :].copy()
        self.capacity = capacity
        self.filled = keep
        self.closes = np.zeros(capacity, dtype=np.float64)
        self.closes[capacity - keep :] = kept
        self.model_input = self.closes.astype(np.float32).reshape(1, capacity)

    def state(self) -> WindowState:
        """What is persisted: only the valid closes, so a restart knows what is still missing."""
        return WindowState(
            symbol=self.symbol,
            last_seq=-1 if self.last_seq is None else self.last_seq,
            last_ts=self.last_ts,
            count=self.count,
            closes=self.closes[self.capacity - self.filled :].copy(),
        )

    @classmethod
    def from_state(cls, state: WindowState, capacity: int) -> SymbolWindow:
        window = cls(state.symbol, len(state.closes))
        window.closes[:] = state.closes
        window.filled = len(state.closes)
        window.count = state.count
        window.last_seq = None if state.last_seq < 0 else state.last_seq
        window.last_ts = state.last_ts
        window.resize(capacity)
        return window
