"""`forecaster evaluate`: a price bundle's metrics on another close series, beside baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from device.bundle import load_bundle
from device.keys import TrustedKeys
from device.manifest import TEACHER_FILE
from forecaster.data import make_price_samples, validate_series
from forecaster.errors import DataError, ForecasterError
from forecaster.tasks.price import baselines, metrics
from forecaster.training.export import run_onnx

__all__ = ["evaluate_bundle"]


def evaluate_bundle(
    bundle_dir: Path, close: pd.Series, trusted: TrustedKeys, fit_fraction: float = 0.5
) -> dict[str, Any]:
    """Metrics of the bundle's student (and teacher, when present) on `close`. Baselines are
    fitted on the first `fit_fraction` of the series; every model is scored on the rest."""
    bundle = load_bundle(bundle_dir, trusted)
    m = bundle.manifest
    if m.task != "price":
        raise ForecasterError(f"{bundle_dir} is a {m.task} bundle; evaluate handles price bundles")
    assert m.window is not None and m.horizons is not None and m.quantiles is not None
    close = validate_series(close, "evaluation series")
    max_h = max(m.horizons)
    fit_end = int(len(close) * fit_fraction)
    if fit_end < m.window + max_h or len(close) - fit_end < max_h + m.window:
        raise DataError(
            f"the series has {len(close)} rows; window {m.window} and horizon {max_h} need at "
            f"least {2 * (m.window + max_h)} to fit baselines and evaluate"
        )
    samples = make_price_samples(close, fit_end + 1, len(close) - 1 - max_h, m.window, m.horizons)
    graphs = {"student": bundle.model_bytes}
    if (bundle_dir / TEACHER_FILE).exists():
        graphs["teacher"] = (bundle_dir / TEACHER_FILE).read_bytes()
    log_close = np.log(close.to_numpy(dtype=np.float64))
    forecasts = {name: run_onnx(graph, samples.x) for name, graph in graphs.items()}
    forecasts |= baselines.baseline_forecasts(
        log_close, samples.origins, m.horizons, m.quantiles, fit_end
    )
    models: dict[str, dict[str, Any]] = {
        name: {"test": metrics.price_metrics(samples.y, q, m.horizons, m.quantiles)}
        for name, q in forecasts.items()
    }
    for name, graph in graphs.items():
        models[name]["bytes"] = len(graph)
    start, end = samples.period()
    return {
        "series": str(close.name),
        "period": [start.isoformat(), end.isoformat()],
        "models": models,
    }
