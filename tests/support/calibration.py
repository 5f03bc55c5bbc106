"""What a fresh calibration state publishes: a new model version's first forecast carries this
correction (not 0 since round 5: the blend moves the longer horizons from the first forecast)."""

from __future__ import annotations

import numpy as np

from device.calibration import Calibrator
from device.schemas import PriceForecast


def is_fresh(f: PriceForecast) -> bool:
    """Whether `f`'s correction is exactly what a calibrator with no history applies to its raw."""
    assert f.raw is not None and f.correction is not None
    fresh = Calibrator("fresh@0", f.horizons, f.quantiles).correct(np.array(f.raw))
    return bool(np.array_equal(fresh.correction, np.array(f.correction)))
