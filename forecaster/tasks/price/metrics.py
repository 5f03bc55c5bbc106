"""Metrics of quantile forecasts of cumulative log returns: pinball loss, interval coverage,
MASE against the random walk, directional accuracy and the Pesaran-Timmermann test.

Conventions: `y` is `[N, H]` (samples, horizons), `q` is `[N, H, Q]` with `levels` strictly
increasing in (0, 1). Inputs must be finite; NaN only appears in outputs where a metric is
undefined, and `price_metrics` turns it into None so the result serializes as plain JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "check_levels",
    "directional_accuracy",
    "interval_coverage",
    "mase",
    "median_forecast",
    "pesaran_timmermann",
    "pinball_loss",
    "price_metrics",
]


def check_levels(levels: Sequence[float]) -> np.ndarray:
    """Quantile levels as a float array, or ValueError unless strictly increasing in (0, 1)."""
    lv = np.asarray(levels, dtype=np.float64)
    if lv.ndim != 1 or lv.size == 0 or not ((lv > 0) & (lv < 1)).all() or (np.diff(lv) <= 0).any():
        raise ValueError(f"levels must be strictly increasing values in (0, 1), got {list(levels)}")
    return lv


def _check_y(y: np.ndarray, other: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if y.ndim != 2 or other.shape[:2] != y.shape:
        raise ValueError(f"need y [N, H] and {name} matching it, got {y.shape} and {other.shape}")
    if not (np.isfinite(y).all() and np.isfinite(other).all()):
        raise ValueError(f"y and {name} must be finite (NaN or inf found)")
    return y, other


def _check_q(y: np.ndarray, q: np.ndarray, levels: Sequence[float]) -> tuple[np.ndarray, ...]:
    lv = check_levels(levels)
    y, q = _check_y(y, q, "q")
    if q.shape != (*y.shape, lv.size):
        raise ValueError(f"need q [N, H, {lv.size}] for y {y.shape}, got {q.shape}")
    return y, q, lv


def pinball_loss(y: np.ndarray, q: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Mean pinball (quantile) loss over samples and levels, per horizon `[H]`."""
    y, q, lv = _check_q(y, q, levels)
    diff = y[..., None] - q
    return np.maximum(lv * diff, (lv - 1) * diff).mean(axis=(0, 2))


def _interval_name(lo: float) -> str:
    return f"{round((1 - 2 * lo) * 100, 6):g}%"


def interval_coverage(
    y: np.ndarray, q: np.ndarray, levels: Sequence[float]
) -> dict[str, np.ndarray]:
    """Per central interval (levels lo and 1 - lo, both present) the share of y inside
    [q_lo, q_hi] per horizon, keyed by its nominal coverage ("90%" for 0.05 / 0.95)."""
    y, q, lv = _check_q(y, q, levels)
    out: dict[str, np.ndarray] = {}
    for i, lo in enumerate(lv):
        if lo >= 0.5:
            break
        hi = np.flatnonzero(np.isclose(lv, 1 - lo, rtol=0, atol=1e-9))
        if hi.size:
            inside = (q[..., i] <= y) & (y <= q[..., hi[0]])
            out[_interval_name(float(lo))] = inside.mean(axis=0)
    return out


def median_forecast(q: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """The 0.5 quantile `[N, H]`: that column when it is a level, else interpolated linearly
    between the two levels around it; ValueError if the levels do not straddle 0.5."""
    lv = check_levels(levels)
    q = np.asarray(q, dtype=np.float64)
    j = int(np.searchsorted(lv, 0.5))
    if j < lv.size and lv[j] == 0.5:
        return q[..., j]
    if j in (0, lv.size):
        raise ValueError(f"levels {lv.tolist()} do not straddle 0.5: no median forecast")
    w = (0.5 - lv[j - 1]) / (lv[j] - lv[j - 1])
    return (1 - w) * q[..., j - 1] + w * q[..., j]


def mase(y: np.ndarray, median: np.ndarray) -> np.ndarray:
    """MAE of the median forecast over the MAE of the random walk's (a zero return), per
    horizon; below 1 beats the random walk. NaN where every y is zero."""
    y, median = _check_y(y, median, "median")
    naive = np.abs(y).mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(naive > 0, np.abs(y - median).mean(axis=0) / naive, np.nan)


def directional_accuracy(y: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Per horizon the share of samples where sign(median) == sign(y), over the samples with a
    directional call (median != 0; a realized zero counts as a miss). NaN with no call."""
    y, median = _check_y(y, median, "median")
    called = median != 0
    hits = ((np.sign(median) == np.sign(y)) & called).sum(axis=0)
    n = called.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / n, np.nan)


def pesaran_timmermann(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Pesaran & Timmermann (1992, JBES 10(4) 461-465) test of directional predictability:
    (statistic, one-sided p-value) under H0 "the predicted and realized directions are
    independent"; a large statistic (small p) means the predictions call the direction.

    With up = (value > 0), n samples, Py, Px the shares of realized and predicted ups,
    P the share of agreeing directions and P* = Py Px + (1 - Py)(1 - Px) its value under H0:
        Var(P)  = P*(1 - P*) / n
        Var(P*) = (2Py - 1)^2 Px(1 - Px) / n + (2Px - 1)^2 Py(1 - Py) / n
                  + 4 Py Px (1 - Py)(1 - Px) / n^2
        S = (P - P*) / sqrt(Var(P) - Var(P*))  ~ N(0, 1),  p = 1 - Phi(S).
    Degenerate case: when every prediction (or every realization) has the same sign the
    variance is zero and S is undefined; we return (NaN, 1.0): such a forecast cannot show
    any timing ability, so the test gives no evidence against H0. Same for n = 0.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    if y.shape != pred.shape:
        raise ValueError(f"y and pred must have the same size, got {y.size} and {pred.size}")
    n = y.size
    if n == 0:
        return math.nan, 1.0
    up_y, up_x = y > 0, pred > 0
    py, px = up_y.mean(), up_x.mean()
    p = (up_y == up_x).mean()
    p_star = py * px + (1 - py) * (1 - px)
    var_p = p_star * (1 - p_star) / n
    var_p_star = (
        (2 * py - 1) ** 2 * px * (1 - px) / n
        + (2 * px - 1) ** 2 * py * (1 - py) / n
        + 4 * py * px * (1 - py) * (1 - px) / n**2
    )
    denom = var_p - var_p_star
    if not denom > 0:
        return math.nan, 1.0
    stat = float((p - p_star) / math.sqrt(denom))
    return stat, float(stats.norm.sf(stat))


def _json(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _per_h(values: np.ndarray, horizons: Sequence[int]) -> dict[str, float | None]:
    return {str(h): _json(v) for h, v in zip(horizons, values, strict=True)}


def price_metrics(
    y: np.ndarray, q: np.ndarray, horizons: Sequence[int], levels: Sequence[float]
) -> dict[str, Any]:
    """Every price metric as a JSON-ready dict keyed by str(horizon); undefined values are
    None. Directional metrics use the median forecast's samples with a call (median != 0)."""
    y, q, _ = _check_q(y, q, levels)
    if len(horizons) != y.shape[1]:
        raise ValueError(f"{len(horizons)} horizons for {y.shape[1]} forecast columns")
    if y.shape[0] == 0:
        raise ValueError("no samples to score")
    median = median_forecast(q, levels)
    accuracy = directional_accuracy(y, median)
    directional: dict[str, dict[str, float | None]] = {}
    for j, h in enumerate(horizons):
        called = median[:, j] != 0
        stat, pvalue = pesaran_timmermann(y[called, j], median[called, j])
        directional[str(h)] = {
            "accuracy": _json(accuracy[j]),
            "pt_stat": _json(stat),
            "pt_pvalue": _json(pvalue),
        }
    per_horizon = pinball_loss(y, q, levels)
    return {
        "n": int(y.shape[0]),
        "pinball": {
            "overall": _json(per_horizon.mean()),
            "per_horizon": _per_h(per_horizon, horizons),
        },
        "coverage": {
            name: _per_h(share, horizons) for name, share in interval_coverage(y, q, levels).items()
        },
        "mase": _per_h(mase(y, median), horizons),
        "directional": directional,
    }
