"""The on-line GARCH(1,1)-t fit (device/garch.py): its t quantiles, that it finds the process
that generated the returns (with and without the GJR leverage term), that rows are independent,
and that the calibrator's mix uses it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from device import garch
from device.calibration import CalibrationSettings, Calibrator

LEVELS = (0.05, 0.1, 0.5, 0.9, 0.95)


@pytest.mark.parametrize("nu", [3.0, 4.0, 6.0, 10.0, 30.0])
def test_student_t_quantiles_match_scipy(nu: float) -> None:
    levels = (0.001, 0.01, *LEVELS, 0.99, 0.999)
    want = stats.t.ppf(levels, nu) * np.sqrt((nu - 2) / nu)
    np.testing.assert_allclose(garch.student_t_ppf(levels, nu), want, rtol=0, atol=1e-7)


GJR = garch.GarchGrid(gammas=(0.0, 0.05, 0.1, 0.15, 0.2))


def simulate(
    alpha: float, beta: float, nu: float, n: int, seed: int, gamma: float = 0.0
) -> np.ndarray:
    """Returns of a GJR-GARCH(1,1) (gamma 0: a GARCH(1,1)) with unit-variance t shocks and
    long-run variance 1e-4."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_t(nu, n) * np.sqrt((nu - 2) / nu)
    omega, s2, out = 1e-4 * (1 - alpha - beta - gamma / 2), 1e-4, np.empty(n)
    for t in range(n):
        out[t] = np.sqrt(s2) * shocks[t]
        s2 = omega + (alpha + gamma * (out[t] < 0)) * out[t] ** 2 + beta * s2
    return out


def fit(returns: np.ndarray, grid: garch.GarchGrid) -> tuple[np.ndarray, ...]:
    """The grid's state after every return, one row."""
    k = grid.constants()
    s = np.zeros((1, garch.STATS))
    s2, ll = np.ones((1, grid.pairs)), np.zeros((1, *grid.cells))
    for r in returns:
        garch.update(s, s2, ll, np.array([r]), np.ones(1), k)
    return s, s2, ll


@pytest.mark.parametrize(
    ("grid", "gamma"),
    [(garch.GarchGrid(), 0.0), (GJR, 0.0), (GJR, 0.15)],
    ids=["symmetric", "gjr-on-symmetric", "gjr-on-leverage"],
)
def test_the_fit_finds_the_generating_cell_and_its_bands_cover(
    grid: garch.GarchGrid, gamma: float
) -> None:
    grid = replace(grid, memory=10**6)  # no forgetting: the MLE of 20,000 returns
    returns = simulate(0.09, 0.885 - gamma / 2, 6.0, 20_000, seed=3, gamma=gamma)
    k = grid.constants()
    s = np.zeros((1, garch.STATS))
    s2, ll = np.ones((1, grid.pairs)), np.zeros((1, *grid.cells))
    inside = []
    for t, r in enumerate(returns):
        if t >= 500:  # the one-step 80% band made before r is known
            q = garch.quantiles(s, s2, ll, garch.horizon_terms(k, [1], LEVELS))[0, 0]
            inside.append(q[1] < r <= q[3])
        garch.update(s, s2, ll, np.array([r]), np.ones(1), k)
    pair, shape = np.divmod(int(ll.argmax()), len(grid.nus))
    assert k.alpha[pair] == pytest.approx(0.09) and k.phi[pair] == pytest.approx(0.975)
    assert (0.0 if k.gamma is None else k.gamma[pair]) == pytest.approx(gamma)
    assert grid.nus[shape] == 6.0
    assert np.mean(inside) == pytest.approx(0.8, abs=0.02)
    # a persistent variance: 20,000 returns pin its long-run level to within about 20%
    assert s[0, garch.VAR] == pytest.approx(1e-4, rel=0.2)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16), n=st.integers(1, 80), gap=st.integers(1, 4), leverage=st.booleans()
)
def test_rows_are_independent(seed: int, n: int, gap: int, leverage: bool) -> None:
    """Two rows stepped together hold exactly what each holds stepped alone (the bank's rows)."""
    grid = replace(GJR if leverage else garch.GarchGrid(), memory=30)
    k = grid.constants()
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.01, (n, 2))
    s = np.zeros((2, garch.STATS))
    s2, ll = np.ones((2, grid.pairs)), np.zeros((2, *grid.cells))
    gaps = np.array([1.0, float(gap)])
    for r in returns:
        garch.update(s, s2, ll, r, gaps, k)
    for row in range(2):
        one = (np.zeros((1, garch.STATS)), np.ones((1, grid.pairs)), np.zeros((1, *grid.cells)))
        for r in returns[:, row]:
            garch.update(one[0], one[1], one[2], np.array([r]), gaps[row : row + 1], k)
        for mine, together in zip(one, (s, s2, ll), strict=True):
            assert mine[0].tobytes() == together[row].tobytes()
        # the one-row path in plain floats holds and forecasts the same, bit for bit
        alone = (np.zeros(garch.STATS), np.ones(grid.pairs), np.zeros(grid.cells))
        for r in returns[:, row]:
            garch.update_one(alone[0], alone[1], alone[2], float(r), int(gaps[row]), k)
        for mine, together in zip(alone, (s, s2, ll), strict=True):
            assert mine.tobytes() == together[row].tobytes()
        terms = garch.horizon_terms(k, [1, 5, 20], LEVELS)
        want = garch.quantiles(s[row : row + 1], s2[row : row + 1], ll[row : row + 1], terms)
        assert garch.quantiles_one(*alone, terms) == want[0].tolist()
    q = garch.quantiles(s, s2, ll, garch.horizon_terms(k, [1, 5, 20], LEVELS))
    assert (np.diff(q, axis=-1) >= 0).all()


def test_the_mix_publishes_the_weighted_mean_of_raw_and_fit() -> None:
    """With the calibration itself off, what goes out is (1 - w) raw + w garch once the fit has
    its 50 returns, and the raw output before."""
    off = CalibrationSettings(step=0.0, scale_step=0.0, blend=0.0, mix=0.5)
    cal = Calibrator("m@1", [1, 5], list(LEVELS), off)
    returns = simulate(0.06, 0.9, 10.0, 80, seed=1)
    close = 100.0 * np.exp(np.cumsum(returns))
    raw = np.sort(np.random.default_rng(0).normal(0, 0.01, (2, 5)), axis=1)
    grid = garch.GarchGrid()
    for t, c in enumerate(close):
        cal.observe(t, float(c))
        out = cal.publish(t, float(c), raw)
        if t < grid.min_returns:
            assert out.returns_rows == raw.tolist()
    s, s2, ll = fit(np.diff(np.log(close)), grid)
    want = (
        0.5 * raw
        + 0.5 * garch.quantiles(s, s2, ll, garch.horizon_terms(grid.constants(), [1, 5], LEVELS))[0]
    )
    np.testing.assert_allclose(out.returns, want, rtol=0, atol=1e-15)
    assert Calibrator.from_bytes(cal.to_bytes()).to_bytes() == cal.to_bytes()


def test_a_grid_whose_beta_would_be_negative_is_refused() -> None:
    with pytest.raises(ValueError, match="persistence"):
        garch.GarchGrid(alphas=(0.5,), gammas=(0.2,), persistences=(0.55,)).constants()


def test_the_leverage_setting_fits_the_gjr_grid_in_the_state() -> None:
    """`garch_leverage` gives every (symbol, model) the GJR grid: a larger state that still
    round-trips, and a mix that follows the GJR fit of the same returns."""
    on = CalibrationSettings(step=0.0, scale_step=0.0, mix=1.0, garch_leverage=True)
    cal = Calibrator("m@1", [1, 5], list(LEVELS), on)
    plain = Calibrator("m@1", [1, 5], list(LEVELS), replace(on, garch_leverage=False))
    grid = on.garch_grid()
    assert grid.pairs == 5 * plain._garch_grid.pairs
    # each extra pair: its variance and one log-likelihood per nu, float64
    extra = 8 * (grid.pairs - plain._garch_grid.pairs) * (1 + len(grid.nus))
    assert cal._buf.size - plain._buf.size == extra
    close = 100.0 * np.exp(np.cumsum(simulate(0.03, 0.87, 6.0, 120, seed=2, gamma=0.15)))
    raw = np.zeros((2, 5))
    for t, c in enumerate(close):
        cal.observe(t, float(c))
        out = cal.publish(t, float(c), raw)
    s, s2, ll = fit(np.diff(np.log(close)), grid)
    want = garch.quantiles(s, s2, ll, garch.horizon_terms(grid.constants(), [1, 5], LEVELS))[0]
    np.testing.assert_allclose(out.returns, want, rtol=0, atol=1e-15)
    assert Calibrator.from_bytes(cal.to_bytes()).to_bytes() == cal.to_bytes()
