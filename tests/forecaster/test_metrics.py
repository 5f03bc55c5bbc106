"""Price forecast metrics: invariants, hand-computed values, the PT test's size and power."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from arch.data import sp500
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from forecaster.tasks.price.metrics import (
    directional_accuracy,
    interval_coverage,
    mase,
    median_forecast,
    pesaran_timmermann,
    pinball_loss,
    price_metrics,
)

LEVELS = (0.05, 0.1, 0.5, 0.9, 0.95)
HORIZONS = (1, 5, 20)

finite = st.floats(-1.0, 1.0, allow_nan=False, width=32)


@st.composite
def forecasts(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Realized y [N, H], sorted quantiles q [N, H, Q] and their levels."""
    n, h = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    levels = sorted(draw(st.sets(st.floats(0.01, 0.99), min_size=1, max_size=5)))
    y = draw(hnp.arrays(np.float64, (n, h), elements=finite))
    q = np.sort(draw(hnp.arrays(np.float64, (n, h, len(levels)), elements=finite)), axis=-1)
    return y, q, levels


@given(forecasts())
def test_pinball_is_non_negative_and_per_horizon(case) -> None:
    y, q, levels = case
    loss = pinball_loss(y, q, levels)
    assert loss.shape == (y.shape[1],)
    assert (loss >= 0).all()


@given(forecasts())
def test_pinball_is_zero_exactly_where_every_quantile_hits_y(case) -> None:
    y, q, levels = case
    assert (pinball_loss(y, np.repeat(y[..., None], len(levels), axis=-1), levels) == 0).all()
    missed = (q != y[..., None]).any(axis=(0, 2))
    np.testing.assert_array_equal(pinball_loss(y, q, levels) > 0, missed)


def test_pinball_matches_a_hand_computation() -> None:
    # y - q = (1, 0, -2): 0.1 * 1, 0, max(0.9 * -2, -0.1 * -2) = 0.2 -> mean 0.1
    y = np.array([[0.0]])
    q = np.array([[[-1.0, 0.0, 2.0]]])
    assert pinball_loss(y, q, [0.1, 0.5, 0.9]) == pytest.approx([0.1])


def test_pinball_rejects_bad_levels_and_shapes() -> None:
    y, q = np.zeros((2, 1)), np.zeros((2, 1, 2))
    with pytest.raises(ValueError, match="strictly increasing"):
        pinball_loss(y, q, [0.9, 0.1])
    with pytest.raises(ValueError, match="q"):
        pinball_loss(y, q, [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="finite"):
        pinball_loss(y, np.full_like(q, np.nan), [0.1, 0.9])


@given(forecasts())
def test_coverage_is_a_share(case) -> None:
    y, q, levels = case
    for share in interval_coverage(y, q, levels).values():
        assert share.shape == (y.shape[1],)
        assert ((share >= 0) & (share <= 1)).all()


def test_coverage_keys_are_the_symmetric_pairs() -> None:
    y, q = np.zeros((1, 1)), np.zeros((1, 1, 5))
    assert set(interval_coverage(y, q, LEVELS)) == {"90%", "80%"}
    assert set(interval_coverage(y, q[..., :3], [0.025, 0.5, 0.975])) == {"95%"}
    assert interval_coverage(y, q[..., :2], [0.1, 0.95]) == {}


def test_exact_gaussian_quantiles_cover_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    scale = np.array([1.0, 3.0, 10.0])
    y = rng.standard_normal((20_000, 3)) * scale
    q = np.broadcast_to(
        stats.norm.ppf(LEVELS)[None, None, :] * scale[None, :, None], (20_000, 3, 5)
    )
    cov = interval_coverage(y, q, LEVELS)
    # binomial sd at n = 20000 is <= 0.0035: 0.012 is over three of them
    np.testing.assert_allclose(cov["90%"], 0.9, atol=0.012)
    np.testing.assert_allclose(cov["80%"], 0.8, atol=0.012)


def test_median_forecast_takes_or_interpolates_the_half_level() -> None:
    q = np.array([[[1.0, 2.0, 4.0]]])
    np.testing.assert_allclose(median_forecast(q, [0.1, 0.5, 0.9]), [[2.0]])
    np.testing.assert_allclose(median_forecast(q, [0.2, 0.4, 0.6]), [[3.0]])
    with pytest.raises(ValueError, match=r"straddle 0\.5"):
        median_forecast(q, [0.6, 0.7, 0.8])


def test_mase_is_one_for_the_random_walk_and_zero_for_a_perfect_median() -> None:
    y = np.array([[0.1, -0.2], [-0.3, 0.4]])
    np.testing.assert_array_equal(mase(y, np.zeros_like(y)), [1.0, 1.0])
    np.testing.assert_array_equal(mase(y, y), [0.0, 0.0])
    # |y - m| = (0.1, 0.1) over |y| = (0.1, 0.3): 0.1 / 0.2 = 0.5
    assert mase(y[:, :1], np.array([[0.0], [-0.2]])) == pytest.approx([0.5])
    assert math.isnan(mase(np.zeros((2, 1)), np.ones((2, 1)))[0])


def test_directional_accuracy_skips_samples_without_a_call() -> None:
    y = np.array([[0.1], [-0.2], [0.3], [-0.4], [0.0]])
    median = np.array([[0.5], [0.5], [0.0], [-1.0], [1.0]])
    # calls on rows 0, 1, 3, 4: hit, miss, hit, miss (a realized zero matches no call)
    assert directional_accuracy(y, median) == pytest.approx([0.5])
    assert math.isnan(directional_accuracy(y, np.zeros_like(y))[0])


def test_pt_matches_a_hand_computation() -> None:
    y = np.array([1, 1, 1, -1, -1, 1, -1, 1], dtype=float)
    pred = np.array([1, 1, -1, -1, -1, 1, 1, 1], dtype=float)
    # n = 8, Py = Px = 5/8, P = 6/8, P* = 25/64 + 9/64 = 17/32, Var(P) = 255/8192,
    # Var(P*) = 2 (1/16)(15/64)/8 + 4 (225/4096)/64 = 465/65536, so
    # S = (6/8 - 17/32) / sqrt(255/8192 - 465/65536) = (7/32) / (sqrt(1575)/256) = 56/sqrt(1575)
    stat, pvalue = pesaran_timmermann(y, pred)
    assert stat == pytest.approx(56 / math.sqrt(1575))
    assert pvalue == pytest.approx(0.5 * math.erfc(stat / math.sqrt(2)))


def test_pt_is_asymptotically_the_independence_chi_square() -> None:
    """PT (1992) show S^2 is asymptotically the 2x2 chi-square test of independence."""
    rng = np.random.default_rng(3)
    y = rng.standard_normal(5000)
    pred = 0.2 * y + rng.standard_normal(5000)
    stat, _ = pesaran_timmermann(y, pred)
    table = np.histogram2d(y > 0, pred > 0, bins=2)[0]
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    assert stat**2 == pytest.approx(chi2, rel=0.01)


def test_pt_detects_aligned_signs() -> None:
    y = np.random.default_rng(0).standard_normal(200)
    _, pvalue = pesaran_timmermann(y, 0.01 * np.sign(y))
    assert pvalue < 1e-10


def test_pt_holds_its_size_on_independent_signs() -> None:
    rng = np.random.default_rng(11)
    pvalues = np.array(
        [
            pesaran_timmermann(rng.standard_normal(250), rng.standard_normal(250))[1]
            for _ in range(400)
        ]
    )
    assert 0.02 <= (pvalues < 0.05).mean() <= 0.09
    assert 0.4 <= np.median(pvalues) <= 0.6


def test_pt_degenerate_predictions_give_no_evidence() -> None:
    y = np.array([0.1, -0.2, 0.3])
    stat, pvalue = pesaran_timmermann(y, np.ones(3))
    assert math.isnan(stat)
    assert pvalue == 1.0
    assert pesaran_timmermann(np.array([]), np.array([]))[1] == 1.0


@pytest.fixture(scope="module")
def spx_targets() -> np.ndarray:
    """Realized 1, 5 and 20-day log returns of SP500 over 2010."""
    log_close = np.log(sp500.load()["Close"].loc["2010-01-01":"2011-02-28"].to_numpy())
    origins = np.arange(252)
    return np.stack([log_close[origins + h] - log_close[origins] for h in HORIZONS], axis=1)


def test_price_metrics_is_plain_json_with_none_for_undefined(spx_targets: np.ndarray) -> None:
    y = spx_targets
    sd = y.std(axis=0)
    q = stats.norm.ppf(LEVELS)[None, None, :] * sd[None, :, None] + np.zeros((len(y), 3, 1))
    m = price_metrics(y, q, HORIZONS, LEVELS)
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    assert m["n"] == len(y)
    keys = {"1", "5", "20"}
    assert set(m["pinball"]["per_horizon"]) == set(m["mase"]) == set(m["directional"]) == keys
    assert m["pinball"]["overall"] == pytest.approx(
        np.mean(list(m["pinball"]["per_horizon"].values()))
    )
    assert set(m["coverage"]) == {"90%", "80%"}
    assert all(set(v) == keys for v in m["coverage"].values())
    assert m["mase"] == dict.fromkeys(keys, 1.0)
    # a zero median makes no directional call
    assert m["directional"]["1"] == {"accuracy": None, "pt_stat": None, "pt_pvalue": 1.0}


def test_price_metrics_scores_directional_calls(spx_targets: np.ndarray) -> None:
    y = spx_targets
    # a median that knows the sign of the outcome: perfect accuracy, tiny PT p-value
    q = np.sign(y)[..., None] * 1e-4 + np.array([-0.01, -0.005, 0.0, 0.005, 0.01])
    d = price_metrics(y, q, HORIZONS, LEVELS)["directional"]
    for row in d.values():
        assert row["accuracy"] == 1.0
        assert row["pt_pvalue"] < 1e-6
    with pytest.raises(ValueError, match="horizons"):
        price_metrics(y, q, (1, 5), LEVELS)
