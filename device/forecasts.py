"""Turn one model output for one bar into the published forecast (plain functions).
(Built through the pydantic models' validating constructors: in pydantic 2 `model_construct` is
Python code and measured twice as slow as validation in its Rust core for these payloads.)"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from device.calibration import Calibrated
from device.errors import ModelError
from device.modelset import LoadedModel
from device.schemas import PriceForecast, TrendForecast
from device.topics import forecast_key

__all__ = ["check_finite", "price_forecast", "price_levels", "trend_forecast"]


def price_levels(last_close: float, log_returns: np.ndarray) -> np.ndarray:
    """Price levels implied by cumulative log returns from the last close."""
    return last_close * np.exp(log_returns.astype(np.float64))


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
    output: np.ndarray | Calibrated,
    latency_ms: float,
) -> PriceForecast:
    """`output` is the model's `[1, H, Q]` quantiles of cumulative log return, or what the
    calibration made of them (then published with the raw output and the correction beside)."""
    calibrated = output if isinstance(output, Calibrated) else None
    returns = output.returns if isinstance(output, Calibrated) else output[0]
    prices = price_levels(last_close, returns)
    check_finite(model, prices)  # NaN or inf in the returns (or a price overflow) shows here
    m = model.manifest
    return PriceForecast(
        **_head(agent, symbol, seq, ts, model),
        last_close=last_close,
        horizons=list(m.horizons or []),
        quantiles=list(m.quantiles or []),
        returns=returns.tolist() if calibrated is None else calibrated.returns_rows,
        prices=prices.tolist(),
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
