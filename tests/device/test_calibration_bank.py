"""The stacked calibration states (`CalibratorBank`) do a `Calibrator`'s arithmetic exactly: the
same published values and the same state bytes, bar for bar, whatever the symbols' order, gaps
and failed bars."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device import calibration
from device.calibration import CalibrationSettings, Calibrator
from device.calibration_bank import CalibratorBank
from device.errors import CalibrationStateError
from tests.support.accuracy import assert_pooled_close, pooled

LEVELS = [0.05, 0.1, 0.5, 0.9, 0.95]
HORIZONS = [1, 5, 20]
MODEL = "price/x@1"

# A pass: bars of symbol i (0..3), each with a seq step (1: next bar, more: a gap) and whether
# the model failed on it.
bar = st.tuples(st.integers(0, 3), st.integers(1, 3), st.booleans())


def _raw(rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.normal(0.0, 0.02, (3, 5)), axis=1).astype(np.float32)


# the GARCH-t fit forecasting from its 4th return on, so that it mixes in these short streams
@mock.patch.object(calibration, "GARCH_GRID", replace(calibration.GARCH_GRID, min_returns=4))
@settings(max_examples=40, deadline=None)
@given(
    passes=st.lists(st.lists(bar, min_size=1, max_size=6), min_size=1, max_size=40),
    step=st.sampled_from([0.02, 0.1, 0.3]),
    window=st.integers(1, 30),
    seed=st.integers(0, 2**16),
    # 1: every step in numpy; 3: small passes row by row, larger ones in numpy; 99: row by row
    vector_from=st.sampled_from([1, 3, 99]),
    scaled=st.booleans(),  # the band scale on (the default method) or per-level tracking alone
    # the dead band: off, or gauges short and wide enough to open and close within a stream
    gate=st.sampled_from([(0, 0.0), (2, 0.2), (5, 0.1)]),
    # the long-memory variance's pull on the raw bands (off, halfway, all the way) and the
    # on-line GARCH-t fit's weight, and whether that fit has the GJR leverage term
    pulls=st.tuples(st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from([0.0, 0.5]), st.booleans()),
)
def test_a_bank_publishes_and_stores_what_calibrators_do(
    passes: list[list[tuple[int, int, bool]]],
    step: float,
    window: int,
    seed: int,
    vector_from: int,
    scaled: bool,
    gate: tuple[int, float],
    pulls: tuple[float, float, bool],
) -> None:
    blend, mix, leverage = pulls
    config = replace(
        CalibrationSettings(step=step / 10, scale_step=step)
        if scaled
        else CalibrationSettings.levels(step=step),
        window=window,
        gate_window=gate[0],
        gate_width=gate[1],
        blend=blend,
        vol_memory=7,
        mix=mix,
        garch_memory=9,
        garch_leverage=leverage,
    )
    rng = np.random.default_rng(seed)
    bank = CalibratorBank(MODEL, HORIZONS, LEVELS, config, vector_from)
    alone = {i: Calibrator(MODEL, HORIZONS, LEVELS, config) for i in range(4)}
    rows = {i: bank.add(f"S{i}", Calibrator(MODEL, HORIZONS, LEVELS, config)) for i in range(4)}
    seqs, closes = dict.fromkeys(range(4), 0), dict.fromkeys(range(4), 100.0)
    for bars in passes:
        distinct = list({i: (i, gap, failed) for i, gap, failed in bars}.values())
        idx, seq, close, raws, ok = [], [], [], [], []
        for i, gap, failed in distinct:
            seqs[i] += gap
            closes[i] *= float(np.exp(rng.normal(0.0, 0.02)))
            idx.append(rows[i]), seq.append(seqs[i]), close.append(closes[i])
            raws.append(_raw(rng)), ok.append(not failed)
        expected = []
        for i, s, c, r, good in zip([b[0] for b in distinct], seq, close, raws, ok, strict=True):
            alone[i].observe(s, c)
            expected.append(alone[i].publish(s, c, r) if good else None)
        good = np.array(ok)
        r_idx, r_seq = np.array(idx), np.array(seq, dtype=np.int64)
        bank.observe(
            r_idx[~good], r_seq[~good], [c for c, g in zip(close, ok, strict=True) if not g]
        )
        if good.any():
            raw, correction, published = bank.step(
                r_idx[good],
                r_seq[good],
                [c for c, g in zip(close, ok, strict=True) if g],
                np.stack([r for r, g in zip(raws, ok, strict=True) if g]),
            )
            want = [e for e in expected if e is not None]
            assert published.tolist() == [e.returns_rows for e in want]
            assert correction.tolist() == [e.correction_rows for e in want]
            assert raw.tolist() == [e.raw_rows for e in want]
    every = bank.pooled_accuracy()  # the status: all rows at once
    for i, cal in alone.items():
        assert bank.to_bytes(f"S{i}") == cal.to_bytes()
        assert_pooled_close(every.get(f"S{i}"), pooled(cal.accuracy()))


@pytest.mark.parametrize("vector_from", [1, 99])
def test_a_bank_refuses_a_bar_it_has_seen_and_a_state_of_another_model(vector_from: int) -> None:
    bank = CalibratorBank(MODEL, HORIZONS, LEVELS, vector_from=vector_from)
    row = bank.add("SPX", Calibrator(MODEL, HORIZONS, LEVELS))
    raw = _raw(np.random.default_rng(0))[None]
    bank.step(np.array([row]), np.array([5]), [100.0], raw)
    assert not bank.fresh(np.array([row]), np.array([5])).any()
    with pytest.raises(CalibrationStateError, match="at or before"):
        bank.step(np.array([row]), np.array([5]), [100.0], raw)
    with pytest.raises(CalibrationStateError, match="does not fit"):
        bank.add("NDX", Calibrator("price/y@2", HORIZONS, LEVELS))
    assert Calibrator.from_bytes(bank.to_bytes("SPX")).last_seq == 5


def test_a_bank_grows_and_keeps_its_rows() -> None:
    bank = CalibratorBank(MODEL, HORIZONS, LEVELS)
    states = {}
    for k in range(20):  # past the first and second doubling
        cal = Calibrator(MODEL, HORIZONS, LEVELS)
        cal.observe(k, 100.0 + k)
        cal.publish(k, 100.0 + k, _raw(np.random.default_rng(k)))
        states[f"S{k}"] = cal.to_bytes()
        bank.add(f"S{k}", cal)
    assert len(bank) == 20
    assert all(bank.to_bytes(s) == blob for s, blob in states.items())
