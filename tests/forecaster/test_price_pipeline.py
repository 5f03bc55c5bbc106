"""The price pipeline end to end on real SP500 closes (quick settings)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from device import OnnxModel, load_bundle, load_trusted_keys
from forecaster.recipe import load_recipe
from forecaster.tasks.price.pipeline import load_price_data

ROOT = Path(__file__).resolve().parents[2]
BASELINES = ("random_walk", "historical_quantiles", "garch")


@pytest.fixture(scope="module")
def report(quick_price_bundle) -> dict:
    return json.loads((quick_price_bundle.path / "report.json").read_text())


def test_periods_are_ordered_and_disjoint(quick_price_bundle) -> None:
    manifest = json.loads((quick_price_bundle.path / "manifest.json").read_text())
    p = {k: [date.fromisoformat(d) for d in v] for k, v in manifest["periods"].items()}
    assert p["train"][1] <= date(2012, 12, 31) < p["validation"][0]
    assert p["validation"][1] <= date(2015, 12, 31) < p["test"][0]
    assert p["train"][0] < p["train"][1] < p["validation"][1] < p["test"][1]


def test_scales_come_from_the_train_period_only() -> None:
    recipe = load_recipe(ROOT / "models" / "price" / "spx.toml")
    data = load_price_data(recipe)
    log_close = np.log(data.close.to_numpy())
    train_returns = np.diff(log_close[: data.train_end + 1])
    assert data.train_vol == pytest.approx(train_returns.std())
    # no target of a train sample reaches past the train period
    assert data.train.origins.max() + 20 <= data.train_end
    assert data.valid.origins.min() > data.train_end


def test_report_scores_every_model_on_validation_and_test(report: dict) -> None:
    models = report["models"]
    assert "teacher" in models
    for name in BASELINES:
        assert name in models
    for row in models.values():
        for split in ("validation", "test"):
            m = row[split]
            assert m["pinball"]["overall"] > 0
            assert set(m["pinball"]["per_horizon"]) == {"1", "5", "20"}
            assert set(m["coverage"]) == {"90%", "80%"}
    for name, row in models.items():
        if name not in BASELINES:
            assert row["bytes"] > 0
            assert row["latency_us_median"] > 0
            assert row["latency_us_p99"] >= row["latency_us_median"]


def test_random_walk_mase_is_one(report: dict) -> None:
    for value in report["models"]["random_walk"]["test"]["mase"].values():
        assert value == pytest.approx(1.0)


def test_torch_onnx_parity_is_bounded_on_real_windows(report: dict) -> None:
    assert report["parity"]["teacher_max_abs"] < 1e-4
    assert report["parity"]["student_max_abs"] < 1e-4


def test_shipped_model_reproduces_the_reported_test_forecasts(
    quick_price_bundle, report: dict
) -> None:
    """What the device runs is exactly what the report scored."""
    recipe = load_recipe(ROOT / "models" / "price" / "spx.toml")
    data = load_price_data(recipe)
    bundle = load_bundle(quick_price_bundle.path, load_trusted_keys([quick_price_bundle.keys_dir]))
    q, _ = OnnxModel(bundle).run_window(data.test.x)
    np.testing.assert_allclose(q, np.asarray(report["test_forecasts"]["quantiles"]), atol=1e-5)
    assert (np.diff(q, axis=-1) >= 0).all()
