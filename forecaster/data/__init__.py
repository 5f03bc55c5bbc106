"""Real data: loaders for shipped and CSV series, time-ordered splits and look-ahead-free windows."""

from __future__ import annotations

from forecaster.data.loaders import (
    CLOSE_DATASETS,
    DATASETS,
    TRAINING_DATASETS,
    CloseDataset,
    load_close_dataset,
    load_close_series,
    load_csv_series,
    load_dataset,
    validate_series,
)
from forecaster.data.windows import (
    PriceSamples,
    SplitIndex,
    make_price_samples,
    period_samples,
    pool_samples,
    split_index,
)

__all__ = [
    "CLOSE_DATASETS",
    "DATASETS",
    "TRAINING_DATASETS",
    "CloseDataset",
    "PriceSamples",
    "SplitIndex",
    "load_close_dataset",
    "load_close_series",
    "load_csv_series",
    "load_dataset",
    "make_price_samples",
    "period_samples",
    "pool_samples",
    "split_index",
    "validate_series",
]
