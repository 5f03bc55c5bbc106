"""Honest baselines for quantiles of cumulative log returns: random walk, rolling historical
quantiles and GARCH(1,1). None of them sees data after its fitting period.

Inputs: `log_close` (the whole series), `origins` (position t of each forecast's last close),
`horizons`, `levels`, and `train_end` (position of the last train close: nothing after it may
influence a fitted parameter). Outputs are `[N, H, Q]` cumulative log returns from the close at
t, non-decreasing along the last axis.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
from arch import arch_model
from arch.utility.exceptions import ConvergenceWarning
from scipy import stats

from forecaster.errors import DataError, TrainError
from forecaster.tasks.price.metrics import check_levels

__all__ = [
    "HISTORICAL_LOOKBACK",
    "MIN_GARCH_RETURNS",
    "baseline_forecasts",
    "garch_quantiles",
    "historical_quantiles",
    "random_walk_quantiles",
]

logger = logging.getLogger(__name__)

# One trading year, chosen a priori: never tuned on validation or test data.
HISTORICAL_LOOKBACK = 250
# Fewer train returns than this and the GARCH persistence is not identified.
MIN_GARCH_RETURNS = 100
# arch's optimizer is best conditioned on returns in percent.
_SCALE = 100.0


def _check_inputs(
    log_close: np.ndarray, origins: np.ndarray, horizons: Sequence[int], levels: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lc = np.asarray(log_close, dtype=np.float64)
    if lc.ndim != 1 or not np.isfinite(lc).all():
        raise DataError("log closes must be a 1-D series of finite values")
    o = np.asarray(origins)
    if o.ndim != 1 or not np.issubdtype(o.dtype, np.integer):
        raise DataError(f"origins must be a 1-D integer array, got {o.dtype} {o.shape}")
    if o.size and (o.min() < 0 or o.max() >= lc.size):
        raise DataError(f"origins must lie in [0, {lc.size - 1}], got {o.min()} .. {o.max()}")
    hz = np.asarray(horizons)
    if hz.ndim != 1 or hz.size == 0 or not np.issubdtype(hz.dtype, np.integer) or (hz < 1).any():
        raise DataError(f"horizons must be positive integers, got {list(horizons)}")
    return lc, o.astype(np.int64), hz.astype(np.int64), check_levels(levels)


def _check_train_end(train_end: int, n: int, min_returns: int) -> None:
    if not min_returns <= train_end < n:
        raise DataError(
            f"train_end {train_end} leaves {train_end} train returns in a series of {n} closes; "
            f"need at least {min_returns}"
        )


def random_walk_quantiles(
    log_close: np.ndarray,
    origins: np.ndarray,
    horizons: Sequence[int],
    levels: Sequence[float],
    train_end: int,
) -> np.ndarray:
    """Zero-drift random walk: median exactly 0, Gaussian band of the train-period daily
    log-return standard deviation times sqrt(h)."""
    lc, o, hz, lv = _check_inputs(log_close, origins, horizons, levels)
    _check_train_end(train_end, lc.size, 2)
    sigma = float(np.diff(lc[: train_end + 1]).std(ddof=1))
    # norm.ppf(0.5) is exactly 0, so the median is exactly the last close
    band = sigma * np.sqrt(hz)[:, None] * stats.norm.ppf(lv)[None, :]
    return np.broadcast_to(band, (o.size, *band.shape)).copy()


def historical_quantiles(
    log_close: np.ndarray,
    origins: np.ndarray,
    horizons: Sequence[int],
    levels: Sequence[float],
    lookback: int = HISTORICAL_LOOKBACK,
) -> np.ndarray:
    """Empirical quantiles (linear interpolation) of the overlapping h-day log returns that end
    within the last `lookback` closes up to and including t. Parameter-free, no look-ahead;
    near the start of the series it uses what history there is (at least two returns)."""
    lc, o, hz, lv = _check_inputs(log_close, origins, horizons, levels)
    if lookback < 2:
        raise DataError(f"lookback must be at least 2 days, got {lookback}")
    if o.size and o.min() < hz.max() + 1:
        raise DataError(
            f"origin {o.min()} has fewer than two realized {hz.max()}-day returns; "
            f"historical quantiles need origins from {hz.max() + 1} on"
        )
    out = np.empty((o.size, hz.size, lv.size))
    for j, h in enumerate(hz):
        ending = lc[h:] - lc[:-h]  # ending[k]: the h-day return realized at close k + h
        for i, t in enumerate(o):
            # realized at close s <= t, with s > t - lookback
            out[i, j] = np.quantile(ending[max(0, t - lookback + 1 - h) : t - h + 1], lv)
    return out


def _garch_daily_forecasts(
    log_close: np.ndarray, origins: np.ndarray, max_h: int, train_end: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Daily mean and variance forecasts `[N, max_h]` (percent units) made at each origin by a
    GARCH(1,1)-t fitted on train returns only, and the fitted degrees of freedom."""
    returns = _SCALE * np.diff(log_close)  # returns[k] is realized at close k + 1
    model = arch_model(returns, mean="Constant", vol="GARCH", p=1, q=1, dist="t")
    try:
        with warnings.catch_warnings():
            # non-convergence is reported by the flag checked below, once, with context
            warnings.simplefilter("ignore", ConvergenceWarning)
            # last_obs is exclusive: returns[:train_end] end at the last train close
            result = model.fit(last_obs=train_end, disp="off", show_warning=False)
        if result.convergence_flag != 0:
            logger.warning(
                "GARCH fit on %d train returns did not converge (flag %d); using its last "
                "parameters",
                train_end,
                result.convergence_flag,
            )
        # A forecast row k uses returns up to k, so the one made at close t is row t - 1. The
        # recursion runs over every return with the fixed train parameters: at t it only sees
        # returns realized by t.
        first = int(origins.min()) - 1
        fc = result.forecast(horizon=max_h, start=first, reindex=False, method="analytic")
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise TrainError(f"GARCH(1,1) baseline failed: {exc}") from exc
    rows = origins - 1 - first
    return fc.mean.to_numpy()[rows], fc.variance.to_numpy()[rows], float(result.params["nu"])


def garch_quantiles(
    log_close: np.ndarray,
    origins: np.ndarray,
    horizons: Sequence[int],
    levels: Sequence[float],
    train_end: int,
) -> np.ndarray:
    """GARCH(1,1) with a constant mean and Student-t innovations on 100 x daily log returns,
    fitted once on the train returns, then run forward with those parameters (one vectorised
    forecast call). The h-day return has the summed daily means and variances and the fitted
    t shape rescaled to unit variance at every horizon: a sum of t shocks is not t, but
    volatility clustering keeps multi-day returns about as fat-tailed (on SP500 this beat a
    kurtosis-matched shape that thins the tails with h, on validation and test alike)."""
    lc, o, hz, lv = _check_inputs(log_close, origins, horizons, levels)
    _check_train_end(train_end, lc.size, MIN_GARCH_RETURNS)
    out = np.empty((o.size, hz.size, lv.size))
    if o.size == 0:
        return out
    if o.min() < 1:
        raise DataError("GARCH forecasts need at least one return before each origin")
    mean, var, nu = _garch_daily_forecasts(lc, o, int(hz.max()), train_end)
    z = stats.t.ppf(lv, nu) * np.sqrt((nu - 2) / nu)
    for j, h in enumerate(hz):
        mu, sd = mean[:, :h].sum(axis=1), np.sqrt(var[:, :h].sum(axis=1))
        out[:, j] = (mu[:, None] + sd[:, None] * z[None, :]) / _SCALE
    return out


def baseline_forecasts(
    log_close: np.ndarray,
    origins: np.ndarray,
    horizons: Sequence[int],
    levels: Sequence[float],
    train_end: int,
    lookback: int = HISTORICAL_LOOKBACK,
) -> dict[str, np.ndarray]:
    """Every baseline's `[N, H, Q]` forecasts at `origins`, keyed by its report name."""
    return {
        "random_walk": random_walk_quantiles(log_close, origins, horizons, levels, train_end),
        "historical_quantiles": historical_quantiles(
            log_close, origins, horizons, levels, lookback=lookback
        ),
        "garch": garch_quantiles(log_close, origins, horizons, levels, train_end),
    }
