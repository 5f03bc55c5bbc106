"""A GARCH(1,1) with Student-t shocks fitted on-line to one symbol's own returns, in numpy only
(the device has neither `arch` nor `scipy`). docs/CALIBRATION.md, "Round 6" and "Round 7".

Maximum likelihood on a fixed grid instead of an optimizer: every (alpha, beta) pair of the grid
keeps its own variance recursion and every (alpha, beta, nu) cell its log-likelihood of the
returns seen so far, so one bar costs one vectorised update of the grid and the fit is always
current (no refit, no stored history, and a state that replays exactly). The mean and the
long-run variance are running means (variance targeting: omega = (1 - alpha - beta) V, a common
GARCH practice, though not what `arch` fits; it leaves the grid to the persistence and the
shape). A grid with `gammas` other than 0 fits the GJR form (Glosten, Jagannathan & Runkle 1993):
a negative shock adds `gamma e^2` to the next variance, the leverage effect of equity indices.
Horizon h's quantiles
are the GARCH(1,1) sums of the daily means and variances with the cell's t shape rescaled to unit
variance, as the project's GARCH baseline computes them (forecaster/tasks/price/baselines.py).

`update` and `quantiles` take arrays with a leading axis of rows (symbols, a bank's stacked
states); `update_one` and `quantiles_one` do the same arithmetic for one symbol with its scalars
in plain floats (a numpy call costs more than they do), bit for bit equal
(tests/device/test_garch.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "GarchConstants",
    "GarchGrid",
    "HorizonTerms",
    "horizon_terms",
    "quantiles",
    "quantiles_one",
    "ready",
    "student_t_ppf",
    "update",
    "update_one",
]

FloatArray = npt.NDArray[np.float64]
Rows = list[list[float]]

# stats columns: returns seen, their running mean, the running mean of squared deviations
# (the long-run variance), and the last observed log close (NaN before the first bar)
N, MEAN, VAR, LAST = range(4)
STATS = 4
# a floor on every variance: a run of unchanged closes must not make a log-density infinite
MIN_VARIANCE = 1e-14


@lru_cache(maxsize=64)
def student_t_ppf(levels: tuple[float, ...], nu: float) -> tuple[float, ...]:
    """Quantiles of Student's t with `nu` degrees of freedom, rescaled to unit variance: the CDF
    by Simpson's rule on a fine grid of the density, inverted by interpolation (accurate to
    about 1e-7 for nu >= 3 at levels within [0.001, 0.999], tests/device/test_garch.py)."""
    x = np.linspace(0.0, 60.0, 240_001)
    log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(math.pi * nu)
    pdf = np.exp(log_c - (nu + 1) / 2 * np.log1p(x * x / nu))
    # Simpson's rule on each pair of intervals: the CDF at every other grid point
    dx = x[1] - x[0]
    pairs = dx / 3 * (pdf[:-2:2] + 4 * pdf[1:-1:2] + pdf[2::2])
    cdf = np.concatenate([[0.5], 0.5 + np.cumsum(pairs)])
    upper = np.interp([max(a, 1 - a) for a in levels], cdf, x[::2])
    sd = math.sqrt(nu / (nu - 2))
    return tuple(float(u if a >= 0.5 else -u) / sd for a, u in zip(levels, upper, strict=True))


@dataclass(frozen=True)
class GarchGrid:
    """The grid a symbol's GARCH(1,1)-t is fitted on: `alphas` x `gammas` x `persistences` (beta
    = persistence - alpha - gamma / 2, the persistence of symmetric shocks) x `nus`; `gammas`
    (0,) is the symmetric GARCH(1,1). `memory`: bars after which the running means and the
    log-likelihoods forget (exponentially; before that they are plain means and sums).
    `min_returns`: returns seen before the fit forecasts at all."""

    alphas: tuple[float, ...] = (0.03, 0.06, 0.09, 0.12, 0.16)
    gammas: tuple[float, ...] = (0.0,)
    persistences: tuple[float, ...] = (0.9, 0.95, 0.975, 0.99)
    nus: tuple[float, ...] = (4.0, 6.0, 10.0, 30.0)
    memory: int = 4000
    min_returns: int = 50

    @property
    def pairs(self) -> int:
        return len(self.alphas) * len(self.gammas) * len(self.persistences)

    @property
    def cells(self) -> tuple[int, int]:
        return self.pairs, len(self.nus)

    def constants(self) -> GarchConstants:
        return _constants(self)


@dataclass(frozen=True)
class GarchConstants:
    """Arrays derived once from a grid: per pair alpha, gamma, beta, 1 - persistence and the
    persistence; per nu the t log-density's constant, (nu + 1) / 2 and 1 / (nu - 2)."""

    alpha: FloatArray
    gamma: FloatArray | None  # None: the symmetric grid (no sign to look at)
    beta: FloatArray
    omega: FloatArray
    phi: FloatArray
    log_c: FloatArray
    half_nu1: FloatArray
    inv_nu2: FloatArray
    keep: float
    memory: float
    min_returns: int
    nus: tuple[float, ...]


@lru_cache(maxsize=16)
def _constants(grid: GarchGrid) -> GarchConstants:
    a, g, p = np.meshgrid(grid.alphas, grid.gammas, grid.persistences, indexing="ij")
    alpha, gamma, phi = a.ravel(), g.ravel(), p.ravel()
    beta = phi - alpha - gamma / 2
    if (beta < 0).any():
        raise ValueError(f"a GARCH grid needs alpha + gamma / 2 <= persistence, got {grid}")
    nu = np.asarray(grid.nus, dtype=np.float64)
    log_c = np.array(
        [
            math.lgamma((n + 1) / 2) - math.lgamma(n / 2) - 0.5 * math.log(math.pi * (n - 2))
            for n in grid.nus
        ]
    )
    return GarchConstants(
        alpha=alpha,
        gamma=gamma if gamma.any() else None,
        beta=beta,
        omega=1.0 - phi,
        phi=phi,
        log_c=log_c,
        half_nu1=(nu + 1) / 2,
        inv_nu2=1.0 / (nu - 2),
        keep=1.0 - 1.0 / grid.memory,
        memory=float(grid.memory),
        min_returns=grid.min_returns,
        nus=grid.nus,
    )


def _step_cells(
    s2: FloatArray,
    ll: FloatArray,
    e2: FloatArray | float,
    var: FloatArray | float,
    neg: FloatArray | float,
    k: GarchConstants,
) -> None:
    """Score the squared deviation `e2` on every cell's variance (the t log-density, the
    likelihoods forgetting by `keep`), then step every pair's variance toward the long-run
    `var`, in place; `neg` is 1 where the deviation was negative (the GJR term), else 0.
    `s2 [..., K]`, `ll [..., K, M]`; `e2`, `var`, `neg` floats for one row or `[R, 1]` for many:
    the same elementwise float64 operations either way."""
    log_s2 = np.log(s2)[..., None]
    ll *= k.keep
    ll += k.log_c - 0.5 * log_s2 - k.half_nu1 * np.log1p((e2 / s2)[..., None] * k.inv_nu2)
    alpha = k.alpha if k.gamma is None else k.alpha + k.gamma * neg
    s2 *= k.beta
    s2 += k.omega * var + alpha * e2
    np.maximum(s2, MIN_VARIANCE, out=s2)


def update(
    stats: FloatArray,
    s2: FloatArray,
    ll: FloatArray,
    r: FloatArray,
    gap: FloatArray,
    k: GarchConstants,
) -> None:
    """One return per row into the grid, in place: `stats [R, 4]`, `s2 [R, K]`, `ll [R, K, M]`,
    `r [R]` the log return since the row's last close, `gap [R]` the bars it spans (a gap of g
    bars counts as one bar of g times the variance). The log-likelihood scores the return on
    each cell's variance before the update, then every variance steps. A row's first return
    only starts its variances (at its own square) and its means."""
    n = stats[:, N] + 1.0
    w = 1.0 / np.minimum(n, k.memory)  # a plain mean until `memory`, then an EWMA
    e = r / np.sqrt(gap) - stats[:, MEAN]
    e2 = e * e
    stats[:, VAR] += (e2 - stats[:, VAR]) * w
    stats[:, MEAN] += e * w
    stats[:, N] = n
    # the GJR term's sign, only where the grid has one (the bar path's symmetric default skips it)
    neg = 0.0 if k.gamma is None else (e < 0.0).astype(np.float64)[:, None]
    _step_cells(s2, ll, e2[:, None], stats[:, VAR, None], neg, k)
    first = n == 1.0
    if first.any():  # nothing to score yet: the fresh state's variances were placeholders
        ll[first] = 0.0
        s2[first] = np.maximum(e2[first, None], MIN_VARIANCE)


def update_one(
    stats: FloatArray, s2: FloatArray, ll: FloatArray, r: float, gap: int, k: GarchConstants
) -> None:
    """`update` on one row (`stats [4]`, `s2 [K]`, `ll [K, M]`): its scalars in plain floats
    (the same IEEE operations, without a numpy call each), its cells by the same numpy code."""
    n = float(stats[N]) + 1.0
    w = 1.0 / min(n, k.memory)
    e = r / math.sqrt(gap) - float(stats[MEAN])
    e2 = e * e
    var = float(stats[VAR])
    var += (e2 - var) * w
    stats[VAR], stats[N] = var, n
    stats[MEAN] += e * w
    if n == 1.0:
        ll[:] = 0.0
        s2[:] = max(e2, MIN_VARIANCE)
    else:
        _step_cells(s2, ll, e2, var, 1.0 if e < 0.0 else 0.0, k)


def ready(stats: FloatArray, k: GarchConstants) -> npt.NDArray[np.bool_]:
    """Rows whose fit has seen enough returns to forecast."""
    enough: npt.NDArray[np.bool_] = stats[:, N] >= k.min_returns
    return enough


@dataclass(frozen=True)
class HorizonTerms:
    """What a forecast at fixed horizons and levels needs of the grid: `h [1, H]`, per pair
    `sums [K, H]` = (1 - phi^h) / (1 - phi) (the weight of today's excess variance in the
    h-bar sum) and per nu `z [M, Q]`, the unit-variance t quantiles."""

    h: FloatArray
    sums: FloatArray
    z: FloatArray
    shapes: int
    # the same as lists of floats, for one row's forecast in plain floats
    h_list: list[float]
    sum_rows: list[list[float]]
    z_rows: list[list[float]]


def horizon_terms(
    k: GarchConstants, horizons: list[int], levels: tuple[float, ...]
) -> HorizonTerms:
    """The constant part of `quantiles`, computed once per calibrator."""
    h = np.asarray(horizons, dtype=np.float64)[None, :]
    phi = k.phi[:, None]
    sums = (1.0 - phi**h) / (1.0 - phi)
    z = np.array([student_t_ppf(levels, nu) for nu in k.nus])
    return HorizonTerms(h, sums, z, len(k.nus), h[0].tolist(), sums.tolist(), z.tolist())


def quantiles(stats: FloatArray, s2: FloatArray, ll: FloatArray, t: HorizonTerms) -> FloatArray:
    """`[R, H, Q]` quantiles of the h-bar log return from the rows' best cells (maximum
    likelihood on the grid): h * mean + sd_h * z_nu(level), sd_h^2 = h V + (s2 - V)(1 -
    phi^h)/(1 - phi)."""
    rows = np.arange(ll.shape[0])
    pair, shape = np.divmod(ll.reshape(rows.size, -1).argmax(axis=1), t.shapes)
    var = stats[:, VAR, None]
    sd = np.sqrt(np.maximum(t.h * var + (s2[rows, pair, None] - var) * t.sums[pair], 0.0))
    out: FloatArray = (t.h * stats[:, MEAN, None])[:, :, None] + sd[:, :, None] * t.z[shape][
        :, None, :
    ]
    return out


def quantiles_one(stats: FloatArray, s2: FloatArray, ll: FloatArray, t: HorizonTerms) -> Rows:
    """`quantiles` of one row (`stats [4]`, `s2 [K]`, `ll [K, M]`) as rows of plain floats: the
    same operations in the same order (IEEE arithmetic and a correctly rounded sqrt in both)."""
    pair, shape = divmod(int(ll.argmax()), t.shapes)
    var, mean, now = float(stats[VAR]), float(stats[MEAN]), float(s2[pair])
    z = t.z_rows[shape]
    out = []
    for h, b in zip(t.h_list, t.sum_rows[pair], strict=True):
        sd = math.sqrt(max(h * var + (now - var) * b, 0.0))
        out.append([h * mean + sd * q for q in z])
    return out
