"""Bar validation (the dead-letter reasons) and the rolling window per symbol."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.bars import SeqCheck, SymbolWindow, check_seq, parse_bar
from device.errors import PayloadError

GOOD = {
    "symbol": "SPX",
    "ts": "2020-01-02T00:00:00Z",
    "open": 3244.7,
    "high": 3258.1,
    "low": 3235.5,
    "close": 3257.9,
    "volume": 3.4e9,
    "seq": 7,
}


def payload(**changes: object) -> bytes:
    fields = {**GOOD, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def test_a_good_bar_parses() -> None:
    bar = parse_bar(payload(), "SPX", None)
    assert (bar.symbol, bar.close, bar.seq) == ("SPX", 3257.9, 7)
    assert parse_bar(payload(), "SPX", frozenset({"SPX", "NDX"})) == bar


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[1, 2]", "invalid bar"),
        (payload(close=...), "invalid bar: close: Field required"),
        (payload(seq=...), "invalid bar: seq: Field required"),
        (payload(close=float("nan")), "close"),
        (payload(high=float("inf")), "high"),
        (payload(close=0), "close: Input should be greater than 0"),
        (payload(low=-3.0), "low: Input should be greater than 0"),
        (payload(volume=-1), "volume"),
        (payload(close="abc"), "close"),
        (payload(seq=-1), "seq"),
        (payload(ts="yesterday"), "ts"),
        (payload(symbol="NDX"), "symbol 'NDX' in the payload differs from the topic's"),
    ],
)
def test_bad_bars_give_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason) as info:
        parse_bar(raw, "SPX", None)
    assert "\n" not in info.value.reason


def test_unknown_symbols_are_refused_when_symbols_are_configured() -> None:
    with pytest.raises(PayloadError, match=r"unknown symbol 'SPX': this agent serves \['NDX'\]"):
        parse_bar(payload(), "SPX", frozenset({"NDX"}))


def test_sequence_numbers() -> None:
    assert check_seq(None, 0) is SeqCheck.NEW
    assert check_seq(4, 5) is SeqCheck.NEW
    assert check_seq(4, 9) is SeqCheck.NEW  # gaps are allowed (a missed bar is not an error)
    assert check_seq(4, 4) is SeqCheck.DUPLICATE
    assert check_seq(4, 2) is SeqCheck.OUT_OF_ORDER


@given(
    closes=st.lists(st.floats(1.0, 1e5), max_size=80),
    capacity=st.integers(0, 32),
    resized=st.integers(0, 48),
)
def test_the_window_holds_the_latest_closes_through_save_restore_and_resize(
    closes: list[float], capacity: int, resized: int
) -> None:
    window = SymbolWindow("SPX", capacity)
    for seq, close in enumerate(closes):
        window.push(seq, f"t{seq}", close)
    kept = closes[max(0, len(closes) - capacity) :] if capacity else []
    assert window.filled == len(kept)
    assert window.count == len(closes)
    for w in range(1, capacity + 1):
        assert window.ready(w) == (len(kept) >= w)
        if window.ready(w):
            np.testing.assert_array_equal(window.latest(w), np.array([kept[-w:]], dtype=np.float32))
    restored = SymbolWindow.from_state(window.state(), resized)
    survivors = kept[max(0, len(kept) - resized) :] if resized else []
    assert restored.filled == len(survivors)
    assert restored.count == len(closes)
    assert restored.last_seq == (len(closes) - 1 if closes else None)
    if survivors:
        n = len(survivors)
        np.testing.assert_array_equal(restored.latest(n), np.array([survivors], dtype=np.float32))
        assert restored.last_close == survivors[-1]
    # The restored window keeps rolling.
    restored.push(len(closes), "next", 123.0)
    if resized:
        assert restored.latest(1)[0, 0] == np.float32(123.0)
