"""Baselines on real SP500 closes: shapes, ordered quantiles, no look-ahead, train-only fits,
GARCH reacting to the autumn-2008 volatility spike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from arch.data import sp500
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from forecaster.errors import DataError
from forecaster.tasks.price.baselines import (
    baseline_forecasts,
    garch_quantiles,
    historical_quantiles,
    random_walk_quantiles,
)
from forecaster.tasks.price.metrics import interval_coverage

LEVELS = (0.05, 0.1, 0.5, 0.9, 0.95)
HORIZONS = (1, 5, 20)


@pytest.fixture(scope="module")
def spx() -> pd.Series:
    """Log closes 2005-2009: train through 2007, then the 2008 crisis."""
    close = sp500.load()["Close"].loc["2005-01-01":"2009-12-31"]
    return np.log(close)


@pytest.fixture(scope="module")
def train_end(spx: pd.Series) -> int:
    return int(spx.index.get_loc(spx.loc[:"2007-12-31"].index[-1]))


def pos(spx: pd.Series, day: str) -> int:
    """Position of the last close on or before `day`."""
    return int(spx.index.get_loc(spx.loc[:day].index[-1]))


@pytest.fixture(scope="module")
def origins(spx: pd.Series, train_end: int) -> np.ndarray:
    return np.arange(train_end + 1, len(spx) - max(HORIZONS), 7)


@pytest.fixture(scope="module")
def forecasts(spx: pd.Series, origins: np.ndarray, train_end: int) -> dict[str, np.ndarray]:
    return baseline_forecasts(spx.to_numpy(), origins, HORIZONS, LEVELS, train_end)


def test_every_baseline_has_the_forecast_shape(forecasts, origins) -> None:
    assert set(forecasts) == {"random_walk", "historical_quantiles", "garch"}
    for q in forecasts.values():
        assert q.shape == (len(origins), len(HORIZONS), len(LEVELS))
        assert np.isfinite(q).all()


levels_st = st.lists(st.floats(0.01, 0.99), min_size=1, max_size=6, unique=True).map(sorted)
horizons_st = st.lists(st.integers(1, 30), min_size=1, max_size=4, unique=True).map(sorted)


@settings(max_examples=15, deadline=None)
@given(levels=levels_st, horizons=horizons_st)
def test_quantiles_are_ordered_for_any_levels_and_horizons(
    spx, train_end, levels, horizons
) -> None:
    lc = spx.to_numpy()[: train_end + 120]
    origins = np.arange(train_end - 40, len(lc), 9)
    for q in baseline_forecasts(lc, origins, horizons, levels, train_end).values():
        assert q.shape == (len(origins), len(horizons), len(levels))
        assert (np.diff(q, axis=-1) >= 0).all()


def test_random_walk_has_zero_median_and_a_train_sqrt_h_band(spx, origins, train_end) -> None:
    lc = spx.to_numpy()
    q = random_walk_quantiles(lc, origins, HORIZONS, LEVELS, train_end)
    assert (q[..., 2] == 0).all()
    sigma = np.diff(lc[: train_end + 1]).std(ddof=1)
    for j, h in enumerate(HORIZONS):
        np.testing.assert_allclose(q[0, j], sigma * np.sqrt(h) * stats.norm.ppf(LEVELS))
    # the band comes from the train period: the 2008 crash does not widen it
    calm = lc.copy()
    calm[train_end + 1 :] = lc[train_end]
    np.testing.assert_array_equal(
        random_walk_quantiles(calm, origins, HORIZONS, LEVELS, train_end), q
    )


def test_historical_quantiles_are_those_of_the_past_h_day_returns(spx) -> None:
    lc = spx.to_numpy()
    t, h, lookback = 600, 5, 60
    past = [lc[s] - lc[s - h] for s in range(t - lookback + 1, t + 1)]
    q = historical_quantiles(lc, np.array([t]), [h], LEVELS, lookback=lookback)
    np.testing.assert_allclose(q[0, 0], np.quantile(past, LEVELS))


def test_historical_quantiles_never_look_ahead(spx) -> None:
    lc = spx.to_numpy()
    origins = np.array([300, 500, 700])
    q = historical_quantiles(lc, origins, HORIZONS, LEVELS)
    for i, t in enumerate(origins):
        changed = lc.copy()
        changed[t + 1 :] += np.random.default_rng(t).normal(0, 0.05, len(lc) - t - 1).cumsum()
        np.testing.assert_array_equal(
            historical_quantiles(changed, origins[i : i + 1], HORIZONS, LEVELS)[0], q[i]
        )
        # while the close at t itself does count
        changed[t] += 0.1
        assert not np.array_equal(
            historical_quantiles(changed, origins[i : i + 1], HORIZONS, LEVELS)[0], q[i]
        )


def test_historical_quantiles_refuse_origins_without_history(spx) -> None:
    with pytest.raises(DataError, match="fewer than two realized 20-day returns"):
        historical_quantiles(spx.to_numpy(), np.array([20, 300]), HORIZONS, LEVELS)


def test_garch_is_fitted_on_the_train_period_only(spx, train_end) -> None:
    lc = spx.to_numpy()
    # forecasts up to train_end depend on the parameters and on train data only
    origins = np.arange(train_end - 60, train_end + 1)
    q = garch_quantiles(lc, origins, HORIZONS, LEVELS, train_end)
    after = lc.copy()
    after[train_end + 1 :] += np.random.default_rng(1).normal(0, 0.03, len(lc) - train_end - 1)
    np.testing.assert_array_equal(garch_quantiles(after, origins, HORIZONS, LEVELS, train_end), q)
    # the test is sensitive: a change inside the train period moves them
    before = lc.copy()
    before[: train_end - 100] += np.random.default_rng(2).normal(0, 0.01, train_end - 100)
    assert not np.allclose(garch_quantiles(before, origins, HORIZONS, LEVELS, train_end), q)


def test_garch_forecast_at_t_ignores_closes_after_t(spx, train_end) -> None:
    lc = spx.to_numpy()
    origins = np.array([train_end + 50, train_end + 200])
    q = garch_quantiles(lc, origins, HORIZONS, LEVELS, train_end)
    changed = lc.copy()
    changed[origins[-1] + 1 :] *= 1.1
    np.testing.assert_array_equal(garch_quantiles(changed, origins, HORIZONS, LEVELS, train_end), q)


def test_garch_band_widens_after_the_2008_volatility_spike(spx, train_end) -> None:
    lc = spx.to_numpy()
    calm, crisis = pos(spx, "2008-08-29"), pos(spx, "2008-10-31")
    q = garch_quantiles(lc, np.array([calm, crisis]), HORIZONS, LEVELS, train_end)
    width = q[:, :, -1] - q[:, :, 0]
    assert (width[1] > 2 * width[0]).all()
    # the random walk's band cannot react
    rw = random_walk_quantiles(lc, np.array([calm, crisis]), HORIZONS, LEVELS, train_end)
    np.testing.assert_array_equal(rw[0], rw[1])


def test_garch_keeps_coverage_through_the_crisis_where_the_random_walk_cannot(
    spx, train_end
) -> None:
    """Fitted on calm 2005-2007, scored on 2008-2009: the random walk's band is far too narrow,
    GARCH's adapts (measured: 90% band 0.60 vs 0.85 of days)."""
    lc = spx.to_numpy()
    origins = np.arange(train_end + 1, len(lc) - 1)
    y = (lc[origins + 1] - lc[origins])[:, None]
    cov = {
        name: interval_coverage(y, q, LEVELS)
        for name, q in baseline_forecasts(lc, origins, [1], LEVELS, train_end).items()
    }
    assert cov["random_walk"]["90%"][0] < 0.7
    assert 0.8 <= cov["garch"]["90%"][0] <= 0.95
    assert 0.68 <= cov["garch"]["80%"][0] <= 0.88


def test_bad_inputs_are_data_errors(spx, train_end) -> None:
    lc = spx.to_numpy()
    o = np.array([train_end + 1])
    with pytest.raises(DataError, match="train returns"):
        garch_quantiles(lc, o, HORIZONS, LEVELS, 50)
    with pytest.raises(DataError, match="origins"):
        random_walk_quantiles(lc, np.array([len(lc)]), HORIZONS, LEVELS, train_end)
    with pytest.raises(DataError, match="finite"):
        random_walk_quantiles(np.r_[lc[:-1], np.nan], o, HORIZONS, LEVELS, train_end)
    with pytest.raises(DataError, match="horizons"):
        random_walk_quantiles(lc, o, [0, 5], LEVELS, train_end)
