"""Live accuracy pooled over horizons the slow way, from `Calibrator.accuracy`, to check what the
agent's status computes for all symbols at once (`CalibratorBank.pooled_accuracy`)."""

from __future__ import annotations

import pytest

from device.calibration import HorizonAccuracy
from device.calibration_bank import PooledAccuracy


def pooled(accuracy: list[HorizonAccuracy]) -> PooledAccuracy | None:
    """Each horizon weighted by its scored forecasts; None before the first one."""
    scored = [a for a in accuracy if a.scored]
    n = sum(a.scored for a in scored)
    if not n:
        return None
    coverage = {
        f"{round(band.nominal * 100):d}": sum(a.bands[k].covered * a.scored for a in scored) / n
        for k, band in enumerate(scored[0].bands)
    }
    return PooledAccuracy(n, sum(a.pinball * a.scored for a in scored) / n, coverage)


def assert_pooled_close(got: PooledAccuracy | None, want: PooledAccuracy | None) -> None:
    """The same counts; the means up to float32 summation order (the losses are float32)."""
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got.scored == want.scored
    assert got.pinball == pytest.approx(want.pinball, rel=1e-5, abs=1e-12)
    assert got.coverage == pytest.approx(want.coverage, abs=1e-12)
