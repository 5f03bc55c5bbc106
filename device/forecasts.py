"""Turn model outputs into the published forecasts (plain functions).
(Built through the pydantic models' validating constructors: in pydantic 2 `model_construct` is
Python code and measured twice as slow as validation in its Rust core for these payloads.)"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

import numpy as np

from device.calibration import Calibrated, Rows
from device.errors import ModelError
from device.modelset import LoadedModel
from device.schemas import PriceForecast, TrendForecast
from device.topics import forecast_key

__all__ = ["Levels", "check_finite", "price_forecast", "price_levels", "trend_forecast"]


class Levels(NamedTuple):
    """What a price forecast publishes: its `[H, Q]` quantiles of cumulative log return (the
    calibrated ones, else the model's output), the price levels they imply, and the calibration
    that made them (raw output and correction), None for the model's output as it is."""

    returns: Rows
    prices: Rows
    calibrated: Calibrated | None


def price_levels(
    model: LoadedModel, last_closes: Sequence[float], outputs: Sequence[np.ndarray | Calibrated]
) -> list[Levels | ModelError]:
    """Several forecasts of one model at once (one numpy call each, not one per forecast), from
    each one's `[H, Q]` model output or its calibration: the published quantiles and
    `last_close * exp(returns)`, or a ModelError where a price level is not finite (NaN or inf
    in the returns, or an overflow): such a forecast is never published."""
    quantiles = np.array(
        [o.returns_rows if isinstance(o, Calibrated) else o for o in outputs], dtype=np.float64
    )
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite levels are refused below
        prices = np.asarray(last_closes, dtype=np.float64)[:, None, None] * np.exp(quantiles)
    finite = cast("list[bool]", np.isfinite(prices).all(axis=(1, 2)).tolist())
    return [
        Levels(q, p, o if isinstance(o, Calibrated) else None)
        if ok
        else ModelError(f"{model.model_id} produced non-finite values for this window")
        for q, p, ok, o in zip(quantiles.tolist(), prices.tolist(), finite, outputs, strict=True)
    ]


def check_finite(model: LoadedModel, values: np.ndarray) -> None:
    """A model output with NaN or inf is an inference error, never published."""
    if not np.isfinite(values).all():
        raise ModelError(f"{model.model_id} produced non-finite values for this window")


def _head(agent: str, symbol: str, seq: int, ts: datetime, model: LoadedModel) -> dict[str, Any]:
    """The fields that say which agent, bar and model a price or trend forecast is for."""
    return {
        "key": forecast_key(agent, symbol, seq, model.model_id),
        "agent": agent,
        "symbol": symbol,
        "model": model.ref,
        "ts": ts,
        "seq": seq,
    }


def price_forecast(
    agent: str,
    symbol: str,
    seq: int,
    ts: datetime,
    last_close: float,
    model: LoadedModel,
    levels: Levels,
    latency_ms: float,
) -> PriceForecast:
    """The forecast of `levels` (`price_levels`): with the raw output and the correction beside
    the published quantiles when they are calibrated."""
    m, calibrated = model.manifest, levels.calibrated
    return PriceForecast(
        **_head(agent, symbol, seq, ts, model),
        last_close=last_close,
        horizons=list(m.horizons or []),
        quantiles=list(m.quantiles or []),
        returns=levels.returns,
        prices=levels.prices,
        latency_ms=latency_ms,
        raw=None if calibrated is None else calibrated.raw_rows,
        correction=None if calibrated is None else calibrated.correction_rows,
    )


def trend_forecast(
    agent: str,
    symbol: str,
    seq: int,
    ts: datetime,
    model: LoadedModel,
    output: np.ndarray,
    latency_ms: float,
) -> TrendForecast:
    """`output` is the model's `[1, C]` class probabilities."""
    proba = output[0]
    check_finite(model, proba)
    return TrendForecast(
        **_head(agent, symbol, seq, ts, model),
        classes=list(model.manifest.classes or []),
        proba=proba.tolist(),
        latency_ms=latency_ms,
    )
