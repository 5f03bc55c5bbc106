"""Time-ordered splits and look-ahead-free windows of raw closes with their future returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from forecaster.errors import DataError
from forecaster.recipe import SplitSection

__all__ = [
    "PriceSamples",
    "SplitIndex",
    "make_price_samples",
    "period_samples",
    "pool_samples",
    "split_index",
]


@dataclass(frozen=True)
class SplitIndex:
    """Positions (inclusive) of the last close of the train and validation periods."""

    start: int
    train_end: int
    valid_end: int
    end: int


def split_index(
    dates: pd.DatetimeIndex, split: SplitSection, window: int, max_horizon: int
) -> SplitIndex:
    """Map the recipe's split dates onto positions; each period must hold at least one sample."""
    first, last = dates[0].date(), dates[-1].date()
    for name, value in (("train_end", split.train_end), ("valid_end", split.valid_end)):
        if not first <= value < last:
            raise DataError(f"split {name} = {value} is outside the data ({first} .. {last})")
    start = 0 if split.start is None else int(dates.searchsorted(pd.Timestamp(split.start)))
    end = (
        len(dates) - 1
        if split.end is None
        else int(dates.searchsorted(pd.Timestamp(split.end), "right")) - 1
    )
    idx = SplitIndex(
        start=start,
        train_end=int(dates.searchsorted(pd.Timestamp(split.train_end), "right")) - 1,
        valid_end=int(dates.searchsorted(pd.Timestamp(split.valid_end), "right")) - 1,
        end=end,
    )
    needed = window + max_horizon
    for name, lo, hi in (
        ("train", idx.start, idx.train_end),
        ("validation", idx.train_end, idx.valid_end),
        ("test", idx.valid_end, idx.end),
    ):
        have = hi - lo + (1 if name == "train" else 0)
        if have < (needed if name == "train" else max_horizon + 1):
            raise DataError(
                f"the {name} period has {have} rows; window {window} and horizon {max_horizon} "
                f"need at least {needed if name == 'train' else max_horizon + 1}; move the split dates"
            )
    return idx


@dataclass(frozen=True)
class PriceSamples:
    """Windows of raw closes `x [N, window]`, targets `y [N, H]` (cumulative log returns from
    the last close) and the origin position of each window in its series; pooled samples also
    say which series (`series`, an index into the recipe's list) each row came from."""

    x: np.ndarray
    y: np.ndarray
    origins: np.ndarray
    dates: pd.DatetimeIndex
    series: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.origins)

    def period(self) -> tuple[date, date]:
        """First and last origin date (over every series, for pooled samples)."""
        return self.dates.min().date(), self.dates.max().date()


def pool_samples(parts: list[PriceSamples]) -> PriceSamples:
    """The samples of several series stacked in order, each row tagged with its series' index;
    one series is returned as it is."""
    if len(parts) == 1:
        return parts[0]
    return PriceSamples(
        x=np.concatenate([p.x for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        origins=np.concatenate([p.origins for p in parts]),
        dates=pd.DatetimeIndex(np.concatenate([p.dates.to_numpy() for p in parts])),
        series=np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)]),
    )


def period_samples(
    close: pd.Series, idx: SplitIndex, window: int, horizons: list[int]
) -> tuple[PriceSamples, PriceSamples, PriceSamples]:
    """Train, validation and test samples of one series. A sample belongs to a period only if
    its origin and every target close lie inside it."""
    max_h = max(horizons)
    return (
        make_price_samples(close, idx.start, idx.train_end - max_h, window, horizons),
        make_price_samples(close, idx.train_end + 1, idx.valid_end - max_h, window, horizons),
        make_price_samples(close, idx.valid_end + 1, idx.end - max_h, window, horizons),
    )


def make_price_samples(
    close: pd.Series, first_origin: int, last_origin: int, window: int, horizons: list[int]
) -> PriceSamples:
    """Samples whose origin t lies in [first_origin, last_origin] and whose every target
    close t+h also lies at or before `last_origin + max(h)` -- callers pass the period's
    last position minus max(h) so that no target crosses into the next period."""
    values = close.to_numpy(dtype=np.float64)
    first = max(first_origin, window - 1)
    origins = np.arange(first, last_origin + 1)
    if len(origins) == 0:
        raise DataError(f"no complete window of {window} closes fits this period")
    offsets = np.arange(-window + 1, 1)
    x = values[origins[:, None] + offsets[None, :]].astype(np.float32)
    log_close = np.log(values)
    y = np.stack([log_close[origins + h] - log_close[origins] for h in horizons], axis=1)
    return PriceSamples(x=x, y=y.astype(np.float32), origins=origins, dates=close.index[origins])
