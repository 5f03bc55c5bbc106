"""On-line calibration of quantile forecasts, scored on the forecasts the agent published
itself when the close `h` bars later arrives. docs/CALIBRATION.md.

Each level's iterate = c + m[h, b] * (raw - c) + theta[h, j] * spread[h]: `c` is the raw median,
`m[h, b]` the scale of the central band b the level belongs to (adaptive conformal inference on
the band's log-scale, Gibbs & Candes 2021: log m += scale_step * (miss - alpha)), and theta
a per-level shift in units of the raw outermost band `spread` (quantile tracking, the P term of
conformal PID control, Angelopoulos, Candes & Tibshirani 2023: theta += step * (a - 1{y <=
iterate})). With `scale_step = 0` it is per-level tracking alone (the earlier method). Both are
scored on each level's own iterate, not the sorted value (scoring the sorted one couples crossed
levels and runs away); the agent publishes the iterates sorted across levels (never crossing).
Before all this (`mix` > 0, the default since round 6) the raw quantiles are mixed with those
of a GARCH(1,1)-t fitted on-line to the symbol's own returns (device/garch.py): `(1 - mix) raw
+ mix garch`, a volatility model with the memory the student's 64-close window lacks. Round 5's
`blend` (off by default now) instead pulls each raw band around the raw median toward the width
of a fixed-coefficient GARCH(1,1) variance. The dead band (`gate_window` > 0, the default since
round 6): per horizon, while the coverage of the bands the calibration starts from (the raw
output or its mix: an exponentially weighted average over about the last `gate_window` scored
forecasts) is within `gate_width` of nominal for every band, those bands are published as they
are; the calibration keeps running underneath. Per bar the work is O(len(horizons) *
len(levels)), plus one vectorised step of the GARCH grid.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from device import garch
from device.errors import CalibrationStateError

__all__ = [
    "STATE_VERSION",
    "BandAccuracy",
    "Calibrated",
    "CalibrationSettings",
    "Calibrator",
    "HorizonAccuracy",
    "pinball",
]

logger = logging.getLogger(__name__)

STATE_VERSION = 5  # 2: the bands' log-scales joined the state; 3: the dead band's; 4: the
# long-memory variance's; 5: the on-line GARCH(1,1)-t fit's
# the grid every symbol's GARCH(1,1)-t is fitted on (docs/CALIBRATION.md, "Round 6")
GARCH_GRID = garch.GarchGrid()
# the leverage terms a grid adds with `garch_leverage` (the GJR form; docs/CALIBRATION.md, "Round 7")
GARCH_GAMMAS = (0.0, 0.05, 0.1, 0.15, 0.2)
# Below this raw spread (log-return units) a forecast is degenerate; keeps theta * spread finite.
_MIN_SPREAD = 1e-9
# Bounds of a band's scale: a degenerate raw band (no width) would push it without end.
_MAX_SCALE = math.exp(5.0)
_MIN_SCALE = math.exp(-5.0)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CalibrationSettings:
    """`step`: per-level shift gain in units of the raw band's spread at horizon 1, divided by
    `h ** horizon_power` at horizon h (h overlapping targets share one path, so their errors come
    in runs of about h). `scale_step`: gain of each central band's log-scale at horizon 1,
    divided by `h ** scale_power`; 0 turns the scale off (per-level tracking alone, the earlier
    method: `CalibrationSettings.levels()`). `gate_window`, `gate_width`: the dead band (the
    uncorrected bands, the raw output or its mix, are published at a horizon while their
    coverage over about the last `gate_window` scored forecasts is within `gate_width` of
    nominal); `gate_window = 0` turns it off. `blend`: how far each raw band is first pulled
    toward the widths of a per-symbol GARCH(1,1) variance with fixed `vol_alpha`, `vol_beta` and
    a long-run variance over about `vol_memory` bars (0: the raw output). `mix`: the weight of
    the symbol's on-line GARCH(1,1)-t quantiles (device/garch.py, its means and likelihoods over
    about `garch_memory` bars) in `(1 - mix) * raw + mix * garch`, taken before the blend and the
    calibration (0: the raw output); `garch_leverage` fits it in the GJR form (a negative shock
    weighs more, `GARCH_GAMMAS`). Chosen on the training series, each scored by a bundle that
    never saw it (docs/CALIBRATION.md, "Round 6": a quarter of the GARCH-t under a 500-forecast
    dead band; round 5's default is `CalibrationSettings(gate_window=0, blend=0.25, mix=0.0)`,
    round 4's `CalibrationSettings(gate_window=250, mix=0.0)`). `window`: scored forecasts per
    horizon kept for the live accuracy."""

    step: float = 0.002
    horizon_power: float = 0.0
    scale_step: float = 0.02
    scale_power: float = 0.5
    gate_window: int = 500
    gate_width: float = 0.03
    blend: float = 0.0
    vol_alpha: float = 0.1
    vol_beta: float = 0.85
    vol_memory: int = 4000
    mix: float = 0.25
    garch_memory: int = 4000
    garch_leverage: bool = False
    window: int = 250

    def __post_init__(self) -> None:
        for name in ("step", "scale_step"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise CalibrationStateError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        for name in ("horizon_power", "scale_power"):
            if not 0.0 <= getattr(self, name) <= 2.0:
                raise CalibrationStateError(f"{name} must lie in [0, 2], got {getattr(self, name)}")
        if self.window < 1:
            raise CalibrationStateError(f"accuracy window must be >= 1, got {self.window}")
        if not 0.0 <= self.blend <= 1.0:
            raise CalibrationStateError(f"blend must lie in [0, 1], got {self.blend}")
        if min(self.vol_alpha, self.vol_beta) < 0.0 or self.vol_alpha + self.vol_beta >= 1.0:
            raise CalibrationStateError(
                f"vol_alpha and vol_beta must be >= 0 with a sum below 1, got {self.vol_alpha}, "
                f"{self.vol_beta}"
            )
        if self.vol_memory < 1 or self.garch_memory < 1:
            raise CalibrationStateError(
                f"vol_memory and garch_memory must be >= 1, got {self.vol_memory}, "
                f"{self.garch_memory}"
            )
        if not 0.0 <= self.mix <= 1.0:
            raise CalibrationStateError(f"mix must lie in [0, 1], got {self.mix}")
        if self.gate_window < 0 or not 0.0 <= self.gate_width < 1.0:
            raise CalibrationStateError(
                f"gate_window must be >= 0 and gate_width in [0, 1), got {self.gate_window}, "
                f"{self.gate_width}"
            )

    def garch_grid(self) -> garch.GarchGrid:
        """The grid this setting fits each symbol's GARCH on."""
        gammas = GARCH_GAMMAS if self.garch_leverage else (0.0,)
        return replace(GARCH_GRID, memory=self.garch_memory, gammas=gammas)

    @classmethod
    def levels(cls, step: float = 0.1, horizon_power: float = 1.0) -> CalibrationSettings:
        """Per-level quantile tracking alone: the method before the scale (for comparison)."""
        return cls(
            step=step,
            horizon_power=horizon_power,
            scale_step=0.0,
            scale_power=0.0,
            gate_window=0,
            blend=0.0,
            mix=0.0,
        )


Rows = list[list[float]]


@dataclass(frozen=True, slots=True)
class Calibrated:
    """What a bar publishes: `returns` = `raw` + `correction`, each `[H, Q]` log returns, kept
    as rows of floats (what the payload carries); `.raw`, `.correction`, `.returns` as arrays."""

    raw_rows: Rows
    correction_rows: Rows
    returns_rows: Rows

    @property
    def raw(self) -> FloatArray:
        return np.array(self.raw_rows, dtype=np.float64)

    @property
    def correction(self) -> FloatArray:
        return np.array(self.correction_rows, dtype=np.float64)

    @property
    def returns(self) -> FloatArray:
        return np.array(self.returns_rows, dtype=np.float64)


@dataclass(frozen=True)
class BandAccuracy:
    """Share of the last `scored` outcomes inside the published [lower, upper] quantiles."""

    lower: float
    upper: float
    covered: float

    @property
    def nominal(self) -> float:
        return self.upper - self.lower


@dataclass(frozen=True)
class HorizonAccuracy:
    """Live accuracy of one horizon over its last `scored` (<= window) scored forecasts."""

    horizon: int
    scored: int
    pinball: float
    below: tuple[float, ...]  # share of outcomes at or below each published level
    bands: tuple[BandAccuracy, ...]


def pinball(y: FloatArray, q: FloatArray, levels: FloatArray) -> FloatArray:
    """Pinball loss of quantiles `q [..., Q]` at `levels [Q]` for outcomes `y [...]`."""
    diff = y[..., None] - q
    loss: FloatArray = np.maximum(levels * diff, (levels - 1.0) * diff)
    return loss


def _bands(levels: FloatArray) -> list[tuple[int, int]]:
    """Index pairs (lower, upper) of the symmetric central bands the levels contain."""
    pairs = []
    for i, a in enumerate(levels):
        match = np.flatnonzero(np.isclose(levels, 1.0 - a))
        if a < 0.5 and match.size:
            pairs.append((i, int(match[0])))
    return pairs


# last_seq when no bar has been observed yet
_NO_SEQ = np.iinfo(np.int64).min
# outcome-below-quantile flags are kept as one bit per level in a uint16
_MAX_LEVELS = 16


def _layout(
    n_h: int, n_q: int, depth: int, window: int, grid: garch.GarchGrid
) -> list[tuple[str, str, tuple[int, ...]]]:
    """The state's arrays, in their order in the one byte buffer that holds them all."""
    return [
        ("_seq", "<i8", (1,)),
        ("theta", "<f8", (n_h, n_q)),
        # each level's band scale (a multiplier: both levels of a band hold the same, 1 outside)
        ("scale", "<f8", (n_h, n_q)),
        # the dead band's gauge: each level's band's raw coverage, exponentially weighted (both
        # levels of a band hold the same, 0 outside)
        ("cover", "<f8", (n_h, n_q)),
        # the long-memory variance (`blend` > 0): last observed log close, next bar's variance,
        # the long-run variance, and 1 once started from a first forecast (else 0)
        ("vol", "<f8", (4,)),
        # the on-line GARCH(1,1)-t fit (`mix` > 0): its running statistics, each (alpha, beta)
        # pair's variance and each (alpha, gamma, beta, nu) cell's log-likelihood (device/garch.py)
        ("garch", "<f8", (garch.STATS,)),
        ("garch_s2", "<f8", (grid.pairs,)),
        ("garch_ll", "<f8", grid.cells),
        # pending forecasts: slot seq % depth holds the one published at bar `origin[slot]`
        ("origin", "<i8", (depth,)),
        ("origin_log_close", "<f8", (depth,)),
        ("scored", "<i8", (n_h,)),
        # the levels' iterates (unsorted), float32 like the model output: halves the state,
        # and scoring uses these same values
        ("pending", "<f4", (depth, n_h, n_q)),
        # the raw output, sorted (what the gauge scores), and whether a horizon published it
        ("pending_raw", "<f4", (depth, n_h, n_q)),
        ("gated", "<u1", (depth, n_h)),
        # live accuracy rings, one row per scored forecast and horizon
        ("loss", "<f4", (window, n_h)),
        ("below", "<u2", (window, n_h)),
    ]


def _state_buffer(
    layout: list[tuple[str, str, tuple[int, ...]]],
) -> tuple[npt.NDArray[np.uint8], dict[str, npt.NDArray[Any]]]:
    """One zeroed byte buffer and a typed view into it per array (8-byte aligned)."""
    sizes = [np.dtype(dt).itemsize * int(np.prod(shape)) for _, dt, shape in layout]
    offsets = np.cumsum([0, *[-(-n // 8) * 8 for n in sizes]])
    buf = np.zeros(int(offsets[-1]), dtype=np.uint8)
    views = {
        name: buf[off : off + n].view(dt).reshape(shape)
        for (name, dt, shape), off, n in zip(layout, offsets, sizes, strict=False)
    }
    return buf, views


def _flat_view(view: npt.NDArray[Any]) -> memoryview[Any]:
    """A flat memoryview of one state array, items as Python ints and floats. The state is
    little-endian; native formats read it as such on the little-endian CPUs the agent runs on."""
    if sys.byteorder != "little":  # pragma: no cover - no big-endian target
        raise CalibrationStateError("the calibration state needs a little-endian CPU")
    data: Any = view.reshape(-1).view(np.uint8).data  # typeshed: cast() takes literals only
    flat: memoryview[Any] = data.cast(view.dtype.char)
    return flat


class Calibrator:
    """Calibration state of one (symbol, model): per bar call `observe(seq, close)` first (scores
    the forecasts whose horizon ends at this close), then `publish(seq, close, raw)`. The whole
    state lives in one byte buffer, so saving it is one copy (`to_bytes`)."""

    def __init__(
        self,
        model: str,
        horizons: list[int],
        levels: list[float],
        settings: CalibrationSettings | None = None,
    ) -> None:
        if not horizons or min(horizons) < 1 or len(set(horizons)) != len(horizons):
            raise CalibrationStateError(f"horizons must be distinct and >= 1, got {horizons}")
        lv = np.asarray(levels, dtype=np.float64)
        if not 2 <= lv.size <= _MAX_LEVELS or not ((lv > 0) & (lv < 1)).all():
            raise CalibrationStateError(f"2 to 16 levels inside (0, 1), got {levels}")
        if (np.diff(lv) <= 0).any():
            raise CalibrationStateError(f"levels must increase, got {levels}")
        self.model = model
        self.horizons = [int(h) for h in horizons]
        self.levels = lv
        self.settings = settings or CalibrationSettings()
        self._h = np.asarray(self.horizons, dtype=np.int64)
        self._bits = (1 << np.arange(lv.size)).astype(np.uint16)
        self._steps = self.settings.step / self._h.astype(np.float64) ** self.settings.horizon_power
        self._band_pairs = _bands(lv)
        self._garch_grid = self.settings.garch_grid()
        self._buf, v = _state_buffer(
            _layout(len(horizons), lv.size, max(horizons), self.settings.window, self._garch_grid)
        )
        self._seq, self.theta, self.origin = v["_seq"], v["theta"], v["origin"]
        self.scale, self.cover = v["scale"], v["cover"]
        self.pending_raw, self.gated = v["pending_raw"], v["gated"]
        self.origin_log_close, self.scored = v["origin_log_close"], v["scored"]
        self.pending, self.loss, self.below = v["pending"], v["loss"], v["below"]
        self._seq[0] = _NO_SEQ
        self.origin[:] = _NO_SEQ  # no bar number, negative ones included, matches it
        self.scale[:] = 1.0
        # The per-bar path reads and writes the same buffer as plain Python numbers through
        # memoryviews (a numpy call on these few values costs more than the arithmetic).
        mv = {name: _flat_view(view) for name, view in v.items()}
        self._m_seq, self._m_theta, self._m_origin = mv["_seq"], mv["theta"], mv["origin"]
        self._m_log_close, self._m_scored = mv["origin_log_close"], mv["scored"]
        self._m_pending, self._m_loss, self._m_below = mv["pending"], mv["loss"], mv["below"]
        self._m_scale, self._m_cover = mv["scale"], mv["cover"]
        self._m_pending_raw, self._m_gated = mv["pending_raw"], mv["gated"]
        self._m_vol = mv["vol"]
        self._g_stats, self._g_s2, self._g_ll = v["garch"], v["garch_s2"], v["garch_ll"]
        self._g_stats[garch.LAST] = math.nan
        self._g_s2[:] = 1.0
        self._shape = self.theta.shape
        self._n_h, self._n_q, self._depth = len(horizons), lv.size, self.origin.size
        self._levels: list[float] = lv.tolist()
        self._step_list: list[float] = self._steps.tolist()
        self._increments = [
            ([g * (a - 1.0) for a in self._levels], [g * a for a in self._levels])
            for g in self._step_list
        ]
        self._mean_q = 1.0 / lv.size
        self._init_scale()
        self._init_gate()
        self._init_vol()
        self._mixing = self.settings.mix > 0.0
        self._garch_k = self._garch_grid.constants()
        self._garch_terms = garch.horizon_terms(self._garch_k, self.horizons, tuple(self._levels))
        header = {
            "version": STATE_VERSION,
            "model": model,
            "horizons": self.horizons,
            "levels": lv.tolist(),
            "settings": asdict(self.settings),
        }
        self._header = json.dumps(header, separators=(",", ":"))

    def _init_scale(self) -> None:
        """The constants of the bands' scale: per horizon and band the factors a miss and a hit
        multiply its scale by, and the centre (the median level, else the innermost band's
        midpoint)."""
        conf, pairs = self.settings, self._band_pairs
        self._scaled = conf.scale_step > 0.0 and bool(pairs)
        steps = conf.scale_step / self._h.astype(np.float64) ** conf.scale_power
        # log m += step * (miss - alpha): up by step * (1 - alpha) on a miss, down by step *
        # alpha on a hit, so the band's long-run miss rate tends to alpha
        alphas = [1.0 - (self._levels[hi] - self._levels[lo]) for lo, hi in pairs]
        self._factors = [
            [
                (lo, hi, math.exp(g * (1.0 - alpha)), math.exp(-g * alpha))
                for (lo, hi), alpha in zip(pairs, alphas, strict=True)
            ]
            for g in steps.tolist()
        ]
        mid = np.flatnonzero(np.isclose(self.levels, 0.5))
        self._centre = (int(mid[0]), int(mid[0])) if mid.size else (pairs or [(0, 0)])[-1]

    def _init_gate(self) -> None:
        """The dead band's constants: per band its lower and upper level and nominal coverage
        (1 - 2 * lower: the bands are symmetric), and the gauges' start at nominal."""
        conf = self.settings
        self._gate_bands = [(lo, hi, 1.0 - 2.0 * self._levels[lo]) for lo, hi in self._band_pairs]
        self._gating = conf.gate_window > 0 and bool(self._gate_bands)
        self._gate_n = float(conf.gate_window)
        self._gate_width = conf.gate_width
        self._closed = [False] * self._n_h
        # per horizon, (where its band's gauge lies in `cover`, nominal) for each band
        self._gate_rows = [
            [(j * self._n_q + lo, nominal) for lo, _, nominal in self._gate_bands]
            for j in range(self._n_h)
        ]
        for lo, hi, nominal in self._gate_bands:
            self.cover[:, lo] = self.cover[:, hi] = nominal

    def _init_vol(self) -> None:
        """The long-memory variance's constants: a GARCH(1,1) recursion with fixed `vol_alpha`,
        `vol_beta`, its long-run variance an EWMA of squared returns over about `vol_memory`
        bars. Horizon h's variance is h * V + (s2 - V) * (1 - phi^h) / (1 - phi), phi = alpha +
        beta (the GARCH(1,1) h-step sum); its outermost band spans `_z_spread` of its sd (the
        normal's), which is what the raw outermost band is compared with."""
        conf = self.settings
        self._blending = conf.blend > 0.0
        phi = conf.vol_alpha + conf.vol_beta
        self._vol_terms = [(float(h), (1.0 - phi**h) / (1.0 - phi)) for h in self.horizons]
        self._vol_keep = 1.0 / conf.vol_memory
        self._vol_omega = 1.0 - phi
        normal = NormalDist()
        self._z_spread = normal.inv_cdf(self._levels[-1]) - normal.inv_cdf(self._levels[0])
        self._h_first = min(range(self._n_h), key=self.horizons.__getitem__)

    def _update_vol(self, seq: int, log_close: float) -> None:
        """One return into the long-memory variance (a gap of g bars counts as g bars of equal
        variance); before the first forecast started it, only the close is kept."""
        vol, last = self._m_vol, self._m_seq[0]
        if vol[3] and last != _NO_SEQ:
            r = log_close - vol[0]
            r2 = r * r / (seq - last)
            v = vol[2] + (r2 - vol[2]) * self._vol_keep
            conf = self.settings
            vol[1] = self._vol_omega * v + conf.vol_alpha * r2 + conf.vol_beta * vol[1]
            vol[2] = v
        vol[0] = log_close

    def _blended(self, rows: Rows) -> Rows:
        """The raw bands pulled toward the long-memory variance's widths around the raw centre:
        v + blend * (ratio - 1) * (v - c), ratio = the variance's outermost band over the raw
        one (so `blend` 0 is the raw output, 1 the variance's widths on the model's shape). A
        first forecast starts the variance at its own shortest horizon's spread."""
        vol, (c0, c1) = self._m_vol, self._centre
        if not vol[3]:
            row = rows[self._h_first]
            sd = max(row[-1] - row[0], _MIN_SPREAD) / self._z_spread
            vol[1] = vol[2] = sd * sd / self.horizons[self._h_first]
            vol[3] = 1.0
        s2, v, out = vol[1], vol[2], []
        for (h, b), row in zip(self._vol_terms, rows, strict=False):
            spread = max(row[-1] - row[0], _MIN_SPREAD)
            ratio = math.sqrt(h * v + b * (s2 - v)) * self._z_spread / spread
            k = self.settings.blend * (ratio - 1.0)
            c = 0.5 * (row[c0] + row[c1])
            out.append([x + k * (x - c) for x in row])
        return out

    def _update_garch(self, seq: int, log_close: float) -> None:
        """One return into the symbol's GARCH(1,1)-t fit (from its second observed bar on)."""
        stats = self._g_stats
        last = float(stats[garch.LAST])
        if not math.isnan(last):
            gap = seq - self._m_seq[0]
            garch.update_one(stats, self._g_s2, self._g_ll, log_close - last, gap, self._garch_k)
        stats[garch.LAST] = log_close

    def _mixed(self, rows: Rows) -> Rows:
        """`(1 - mix) * raw + mix * garch` once the fit has seen enough returns, else the raw
        rows (both sorted, so the mix is too)."""
        if self._g_stats[garch.N] < self._garch_k.min_returns:
            return rows
        fit = garch.quantiles_one(self._g_stats, self._g_s2, self._g_ll, self._garch_terms)
        w = self.settings.mix
        keep = 1.0 - w
        return [
            [keep * a + w * b for a, b in zip(row, g, strict=False)]
            for row, g in zip(rows, fit, strict=False)
        ]

    def _gates(self) -> list[bool]:
        """Per horizon, whether the uncorrected bands (raw or mixed) go out now: every band's
        gauge within `gate_width` of nominal."""
        if not self._gating:
            return self._closed
        cover, width, gates = self._m_cover, self._gate_width, []
        for row in self._gate_rows:
            inside = True
            for at, nominal in row:
                if not -width <= cover[at] - nominal <= width:
                    inside = False
                    break
            gates.append(inside)
        return gates

    @property
    def last_seq(self) -> int | None:
        seq = int(self._seq[0])
        return None if seq == _NO_SEQ else seq

    # -- per bar ---------------------------------------------------------------------------

    def observe(self, seq: int, close: float) -> int:
        """Score every pending forecast whose target is this bar and update the corrections;
        returns how many horizons were scored. A bar at or before the last one is ignored."""
        if seq <= self._m_seq[0]:
            return 0
        if not (math.isfinite(close) and close > 0):
            raise CalibrationStateError(f"close must be a positive number, got {close}")
        log_close = math.log(close)
        if self._blending:
            self._update_vol(seq, log_close)
        if self._mixing:
            self._update_garch(seq, log_close)
        self._m_seq[0] = seq
        origin, depth, scored = self._m_origin, self._depth, 0
        for j, h in enumerate(self.horizons):
            slot = (seq - h) % depth
            # nothing to score where no forecast was published h bars ago (gap, error, fresh)
            if origin[slot] == seq - h:
                self._score(j, log_close - self._m_log_close[slot], slot)
                scored += 1
        return scored

    def _score(self, j: int, y: float, slot: int) -> None:
        """Update horizon j's corrections with outcome `y` of the forecast in `slot`; its
        pinball loss and hits go to the live accuracy rings. Plain floats in the same order of
        operations as the array form (docs/CALIBRATION.md): [3, 5] arrays cost more in numpy
        calls than in arithmetic."""
        n_q, levels, theta = self._n_q, self._levels, self._m_theta
        at = (slot * self._n_h + j) * n_q
        q = self._m_pending[at : at + n_q].tolist()
        hits = [y <= p for p in q]  # each level scored on its own iterate
        if self._step_list[j]:
            # step * (a - 1{y <= q}), precomputed for both outcomes (the same floats)
            row, on_hit, on_miss = j * n_q, *self._increments[j]
            for i, hit in enumerate(hits):
                theta[row + i] += on_hit[i] if hit else on_miss[i]
        if self._scaled:
            scale, row = self._m_scale, j * n_q
            for lo, hi, up, down in self._factors[j]:
                m = scale[row + lo] * (up if hits[lo] or not hits[hi] else down)
                m = _MAX_SCALE if m > _MAX_SCALE else _MIN_SCALE if m < _MIN_SCALE else m
                scale[row + lo] = scale[row + hi] = m
        # live accuracy of what was published: the sorted iterates (the same unless crossed),
        # or the raw output where the dead band published it
        published = sorted(q)
        if self._gating:
            raw, cover, row, n = self._m_pending_raw, self._m_cover, j * n_q, self._gate_n
            for lo, hi, _ in self._gate_bands:
                c = cover[row + lo]
                c += ((raw[at + lo] < y <= raw[at + hi]) - c) / n
                cover[row + lo] = cover[row + hi] = c
            if self._m_gated[slot * self._n_h + j]:
                published = raw[at : at + n_q].tolist()
        if published != q:
            hits = [y <= p for p in published]
        loss, below, mean_q = 0.0, 0, self._mean_q
        for i, p in enumerate(published):
            loss += (levels[i] - hits[i]) * (y - p) * mean_q
            below |= hits[i] << i
        ring = (self._m_scored[j] % self.settings.window) * self._n_h + j
        self._m_loss[ring] = loss
        self._m_below[ring] = below
        self._m_scored[j] += 1

    def _raw_rows(self, raw: FloatArray) -> Rows:
        """The raw `[H, Q]` output as rows of floats, checked."""
        r = raw if isinstance(raw, np.ndarray) and raw.dtype.kind == "f" else np.asarray(raw, float)
        rows: Rows = r.tolist()
        # one C-level sum: NaN or inf if any value is (or the values are absurdly large)
        if r.shape != self._shape or not math.isfinite(sum(map(sum, rows))):
            raise CalibrationStateError(
                f"raw forecast must be finite {list(self._shape)}, got {rows}"
            )
        return rows

    def _correct(self, rows: Rows, slot: int | None) -> Calibrated:
        """Each level's iterate c + m * (raw - c) + theta * spread (kept in the pending
        forecasts' `slot` if given), published sorted, or the raw output sorted where the dead
        band is open: the array form's operations, in plain floats."""
        theta, n_q, pending = self._m_theta.tolist(), self._n_q, self._m_pending
        scaled, (c0, c1) = self._scaled, self._centre
        scale = self._m_scale.tolist() if scaled else []
        gates = self._gates()
        returns, correction = [], []
        for j, row in enumerate(rows):
            spread = max(row[-1] - row[0], _MIN_SPREAD)
            at = j * n_q
            # c + m * (raw - c) + theta * spread, written so that m = 1, theta = 0 is exactly raw
            if scaled:
                c = 0.5 * (row[c0] + row[c1])
                iterates = [
                    v + (scale[at + i] - 1.0) * (v - c) + theta[at + i] * spread
                    for i, v in enumerate(row)
                ]
            else:
                iterates = [v + theta[at + i] * spread for i, v in enumerate(row)]
            ordered = sorted(row) if self._gating else row
            if slot is not None:
                pending_at = (slot * self._n_h + j) * n_q
                for i, v in enumerate(iterates):  # float32, rounded as a numpy cast rounds
                    pending[pending_at + i] = v
                if self._gating:
                    for i, v in enumerate(ordered):
                        self._m_pending_raw[pending_at + i] = v
                    self._m_gated[slot * self._n_h + j] = gates[j]
            if gates[j]:
                iterates = ordered
            else:
                iterates.sort()
            returns.append(iterates)
            # equal lengths by construction; strict's check costs more than the subtraction
            correction.append([o - v for o, v in zip(iterates, row, strict=False)])
        return Calibrated(rows, correction, returns)

    def _calibrate(self, rows: Rows, slot: int | None) -> Calibrated:
        """`_correct` on the mixed and blended rows where mixing or blending, the correction
        then relative to the raw output (so it holds the mix and the blend too)."""
        base = self._mixed(rows) if self._mixing else rows
        if self._blending:
            base = self._blended(base)
        if base is rows:
            return self._correct(rows, slot)
        out = self._correct(base, slot)
        correction = [
            [o - v for o, v in zip(pub, row, strict=False)]
            for pub, row in zip(out.returns_rows, rows, strict=False)
        ]
        return Calibrated(rows, correction, out.returns_rows)

    def correct(self, raw: FloatArray) -> Calibrated:
        """The published quantiles for a raw `[H, Q]` model output; changes no state (a fresh
        state's long-memory variance is started from this output, as the first publish would)."""
        saved = self._m_vol.tobytes()
        try:
            return self._calibrate(self._raw_rows(raw), None)
        finally:
            self._m_vol[:] = memoryview(saved).cast("d")

    def publish(self, seq: int, close: float, raw: FloatArray) -> Calibrated:
        """Correct the raw output of bar `seq` and remember it until its targets arrive."""
        if seq != self._m_seq[0]:
            raise CalibrationStateError(f"publish bar {seq} without observing it first")
        rows = self._raw_rows(raw)
        slot = seq % self._depth
        self._m_origin[slot] = seq
        self._m_log_close[slot] = math.log(close)
        return self._calibrate(rows, slot)

    # -- status ----------------------------------------------------------------------------

    def accuracy(self) -> list[HorizonAccuracy]:
        """Rolling pinball loss, share below each level and band coverage per horizon."""
        out = []
        for j, h in enumerate(self.horizons):
            n = int(min(self.scored[j], self.settings.window))
            below = (self.below[:n, j, None] & self._bits) > 0
            bands = tuple(
                BandAccuracy(
                    float(self.levels[lo]),
                    float(self.levels[hi]),
                    float((below[:, hi] & ~below[:, lo]).mean()) if n else float("nan"),
                )
                for lo, hi in self._band_pairs
            )
            out.append(
                HorizonAccuracy(
                    horizon=h,
                    scored=n,
                    pinball=float(self.loss[:n, j].mean()) if n else float("nan"),
                    below=tuple(below.mean(axis=0).tolist()) if n else (),
                    bands=bands,
                )
            )
        return out

    # -- state -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The state for the outbox: 4-byte header length, JSON header, the state buffer."""
        head = self._header.encode()
        return len(head).to_bytes(4, "little") + head + self._buf.tobytes()

    def to_json(self) -> str:
        """The same state as JSON, the buffer as base64 (for reading and debugging)."""
        state = base64.b64encode(self._buf.tobytes()).decode()
        return f'{self._header[:-1]},"state":"{state}"}}'

    @classmethod
    def _restore(cls, header: dict[str, Any], state: bytes) -> Calibrator:
        if header.get("version") != STATE_VERSION:
            raise CalibrationStateError(f"calibration state version {header.get('version')}")
        cal = cls(
            header["model"],
            header["horizons"],
            header["levels"],
            CalibrationSettings(**header["settings"]),
        )
        if len(state) != cal._buf.size:
            raise CalibrationStateError(
                f"calibration state holds {len(state)} bytes, its layout {cal._buf.size}"
            )
        cal._buf[:] = np.frombuffer(state, dtype=np.uint8)
        return cal

    @classmethod
    def from_bytes(cls, blob: bytes) -> Calibrator:
        """Rebuild a state saved by `to_bytes`; a malformed one raises CalibrationStateError."""
        try:
            size = int.from_bytes(blob[:4], "little")
            return cls._restore(json.loads(blob[4 : 4 + size]), blob[4 + size :])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CalibrationStateError(f"unreadable calibration state: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Calibrator:
        """Rebuild a state saved by `to_json`; a malformed one raises CalibrationStateError."""
        try:
            doc = json.loads(text)
            state = base64.b64decode(doc.pop("state"), validate=True)
            return cls._restore(doc, state)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CalibrationStateError(f"unreadable calibration state: {exc}") from exc

    @classmethod
    def resume(
        cls,
        saved: bytes | str | None,
        model: str,
        horizons: list[int],
        levels: list[float],
        settings: CalibrationSettings | None = None,
    ) -> Calibrator:
        """The saved state if it belongs to this model version and layout, else a fresh one
        (a new model version starts fresh: its errors are not the old model's)."""
        fresh = cls(model, horizons, levels, settings)
        if saved is None:
            return fresh
        try:
            cal = cls.from_bytes(saved) if isinstance(saved, bytes) else cls.from_json(saved)
        except CalibrationStateError as exc:
            logger.warning("calibration state of %s discarded: %s", model, exc)
            return fresh
        same_layout = cal.horizons == fresh.horizons and np.array_equal(cal.levels, fresh.levels)
        if cal.model != model or not same_layout or cal.settings != fresh.settings:
            return fresh
        return cal
