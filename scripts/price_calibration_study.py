"""Offline study of on-line calibration for price bundles (docs/CALIBRATION.md).

    python -m scripts.price_calibration_study BUNDLE_DIR              # tuning: validation periods
    python -m scripts.price_calibration_study BUNDLE_DIR --diagnose   # where tracking costs pinball
    python -m scripts.price_calibration_study BUNDLE_DIR --final      # once: test + eval series
    python -m scripts.price_calibration_study BUNDLE_DIR --fresh      # once: round 3's new series
    python -m scripts.price_calibration_study BUNDLE_DIR --loso REGISTRY   # round 4's tuning
    python -m scripts.price_calibration_study BUNDLE_DIR --fresh4     # once: round 4's new series

Runs a price bundle's ONNX model through onnxruntime on every window of a series and feeds the
outputs bar by bar through `device.calibration.Calibrator` (the agent's code path), started
fresh `WARMUP` bars before the scored period. Tuning (default) scores only the validation
periods of the training series SPX, NDX, CAC, SMI and prints, per calibration setting (per-level
tracking "levels", band scale "scale", and round 3's dead band "gate" and aggregation "hedge"
around a band scale), pinball loss relative to GARCH(1,1) and to rolling
historical quantiles and the coverage of the 10-90% and 5-95% bands, plus the panel-feature
table. `--diagnose` splits the pinball of the raw model and of per-level tracking by horizon and
level on the same periods. `--final` scores, with the settings the code ships
(CalibrationSettings()) and the previous method, SPX's and NDX's test periods and the last 15% of
each evaluation-only series; it steers nothing. `--fresh` does the same on the series first
scored in round 3 (FRESH). `--loso` tunes round 4 on the leave-one-series-out bundles of
`scripts.loso_bundles`: each training series' bars before its test period, scored by the bundle
that never saw that series, with round 4's grid and rule; `--fresh4` scores round 4's new
evaluation series (FRESH4) once, after the choice.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from device.bundle import find_bundles
from device.calibration import CalibrationSettings, Calibrator, pinball
from forecaster.data import load_close_series
from forecaster.recipe import DataSection
from forecaster.tasks.price import baselines

WARMUP = 500  # bars the calibrator runs before the scored period (the warm-up)
EVAL_SHARE = 0.15  # evaluation-only series: the last 15% is scored
# training series -> (source, last train date, last validation date); SPX's recipe dates for
# both arch.data series, a 70/15/15 split by date for EuStockMarkets (1991-07-01 .. 1998-08-14)
TRAINING = {
    "SPX": ("sp500", "2012-12-31", "2015-12-31"),
    "NDX": ("nasdaq", "2012-12-31", "2015-12-31"),
    "CAC": ("cac", "1996-06-28", "1997-08-29"),
    "SMI": ("smi", "1996-06-28", "1997-08-29"),
}
EVALUATION = ["wti", "dax", "ftse", "nyse", "djia"]
# evaluation-only series first scored in round 3, after its choice (the others had been scored
# twice): two exchange rates and a single stock
FRESH = ["gbp", "jpy", "ibm"]
# evaluation-only series first scored in round 4, after its choice: three more exchange rates of
# Ecdat's Garch and two stocks and the market index of Ecdat's CRSPday
FRESH4 = ["dem", "cad", "chf", "ge", "mobil", "crsp"]
# per-level tracking alone: (step, horizon_power); step 0 is the raw model
LEVELS_GRID = [(0.0, 0.0)] + [
    (s, p)
    for p in (0.0, 0.25, 0.5, 1.0)
    for s in (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2)
]
# band scale: (scale_step, scale_power) x per-level shift step x the power of h it is divided
# by; the shifts are small: the per-level tracking's noise is what --diagnose found costly (the
# median's above all)
SCALES = [(0.02, 0.0), (0.05, 0.0), (0.03, 0.5), (0.05, 0.5), (0.1, 0.5), (0.05, 1.0), (0.1, 1.0)]
SCALES += [(0.2, 1.0)]


def scale_grid(
    scales: list[tuple[float, float]], shifts: tuple[float, ...]
) -> list[CalibrationSettings]:
    """Band scales (step, power of h) x per-level shifts (step, at h^0, h^0.5, h^1; a zero
    shift once), no dead band."""
    return list(
        dict.fromkeys(
            CalibrationSettings(
                step=shift,
                horizon_power=p if shift else 0.0,
                scale_step=g,
                scale_power=gp,
                gate_window=0,
                blend=0.0,
                mix=0.0,
            )
            for g, gp in scales
            for shift in shifts
            for p in (0.0, 0.5, 1.0)
        )
    )


SCALE_GRID = scale_grid(SCALES, (0.0, 0.002, 0.005, 0.01))
PREVIOUS = CalibrationSettings.levels(0.1, 1.0)  # the per-level setting the panel first served
# round 2's default: the band scale, no dead band; round 3's: a dead band on it
ROUND2 = CalibrationSettings(
    step=0.005,
    horizon_power=0.0,
    scale_step=0.1,
    scale_power=1.0,
    gate_window=0,
    blend=0.0,
    mix=0.0,
)
ROUND3 = replace(ROUND2, gate_window=100, gate_width=0.015)
# round 4's: a slower band scale and finer shift under a 250-forecast +-3 pp dead band
ROUND4 = CalibrationSettings(blend=0.0, gate_window=250, mix=0.0)
# round 5's: the raw bands pulled a quarter of the way toward a fixed-coefficient GARCH variance
ROUND5 = CalibrationSettings(
    blend=0.25, vol_alpha=0.1, vol_beta=0.85, vol_memory=4000, gate_window=0, mix=0.0
)
# round 6's: a quarter of a symmetric GARCH(1,1)-t fitted on-line, under a 500-forecast dead band
ROUND6 = CalibrationSettings(
    blend=0.0, gate_window=500, gate_width=0.03, mix=0.25, garch_memory=4000, garch_leverage=False
)
ROLLING = [250, 500]


@dataclass(frozen=True)
class Model:
    session: ort.InferenceSession
    window: int
    horizons: list[int]
    levels: list[float]
    model_id: str

    @classmethod
    def load(cls, bundle: Path) -> Model:
        manifest = json.loads((bundle / "manifest.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(bundle / manifest["model_file"]), opts)
        return cls(
            session,
            manifest["window"],
            manifest["horizons"],
            manifest["quantiles"],
            f"{manifest['name']}@{manifest['version']}",
        )

    def raw(self, close: np.ndarray) -> np.ndarray:
        """`[N, H, Q]` raw quantiles at every position (NaN before the first full window)."""
        n, w = close.size, self.window
        out = np.full((n, len(self.horizons), len(self.levels)), np.nan)
        windows = np.lib.stride_tricks.sliding_window_view(close.astype(np.float32), w)
        name = self.session.get_inputs()[0].name
        for start in range(0, len(windows), 4096):
            batch = np.ascontiguousarray(windows[start : start + 4096])
            out[w - 1 + start : w - 1 + start + len(batch)] = self.session.run(None, {name: batch})[
                0
            ]
        return out


def label(conf: CalibrationSettings | Hedge) -> str:
    """A setting's name in the tables."""
    if isinstance(conf, Hedge):
        return f"hedge eta {conf.eta} keep {conf.keep} on {label(conf.base)}"
    if conf.mix:
        form = "GJR-GARCH-t" if conf.garch_leverage else "GARCH-t"
        return f"mix {conf.mix} {form} over {conf.garch_memory}; {label(replace(conf, mix=0.0))}"
    if conf.blend:
        vol = f"GARCH {conf.vol_alpha}/{conf.vol_beta} over {conf.vol_memory}"
        return f"blend {conf.blend} {vol}; {label(replace(conf, blend=0.0))}"
    if conf.gate_window:
        ungated = replace(conf, gate_window=0)
        return f"gate {conf.gate_window}/{100 * conf.gate_width:.1f}pp on {label(ungated)}"
    shift = f"{conf.step}/h^{conf.horizon_power}"
    if not conf.scale_step:
        return f"levels {shift}" if conf.step else "raw"
    return f"scale {conf.scale_step}/h^{conf.scale_power} + shift {shift}"


def targets(log_close: np.ndarray, origins: np.ndarray, horizons: list[int]) -> np.ndarray:
    return np.stack([log_close[origins + h] - log_close[origins] for h in horizons], axis=1)


def calibrated_path(
    model: Model,
    close: np.ndarray,
    raw: np.ndarray,
    last: int,
    start: int,
    settings: CalibrationSettings,
) -> np.ndarray:
    """Published quantiles at bars start..last from a Calibrator started at bar `start`."""
    cal = Calibrator(model.model_id, model.horizons, model.levels, settings)
    out = np.empty((last - start + 1, *raw.shape[1:]))
    for t in range(start, last + 1):
        cal.observe(t, float(close[t]))
        out[t - start] = cal.publish(t, float(close[t]), raw[t]).returns
    return out


def warm_start(model: Model, first: int) -> int:
    """The bar a calibrator starts at: WARMUP bars before the scored period (or the first
    forecast)."""
    return max(first - WARMUP, model.window - 1)


def quantile_tracking(
    model: Model,
    close: np.ndarray,
    raw: np.ndarray,
    first: int,
    last: int,
    settings: CalibrationSettings,
) -> np.ndarray:
    """Published quantiles at origins first..last from a Calibrator started WARMUP bars before."""
    start = warm_start(model, first)
    return calibrated_path(model, close, raw, last, start, settings)[first - start :]


@dataclass(frozen=True)
class Hedge:
    """On-line aggregation per horizon of two experts, the raw model and the calibrator `base`:
    published = w * calibrated + (1 - w) * raw, w = 1 / (1 + exp(-eta * D)), D the discounted
    sum (factor `keep` per scored forecast) of the raw minus the calibrated pinball loss (mean
    over levels, in units of the raw 5-95% spread): exponentially weighted averaging with
    forgetting (Hedge with two experts; Cesa-Bianchi & Lugosi 2006, ch. 2)."""

    base: CalibrationSettings
    eta: float
    keep: float


def expert_paths(
    model: Model,
    close: np.ndarray,
    raw: np.ndarray,
    first: int,
    last: int,
    base: CalibrationSettings,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(start, sorted raw, calibrated, outcome `[n, H]`, NaN where not yet known) at bars
    start..last: what `hedged` combines, the outcome of bar s's h-bar forecast
    becoming known at bar s + h."""
    start = warm_start(model, first)
    calibrated = calibrated_path(model, close, raw, last, start, base)
    raw_sorted = np.sort(raw[start : last + 1], axis=-1)
    log_close = np.log(close)
    y = np.full((last - start + 1, len(model.horizons)), np.nan)
    for j, h in enumerate(model.horizons):
        n = min(last + 1, len(close) - h) - start
        y[:n, j] = log_close[start + h : start + h + n] - log_close[start : start + n]
    return start, raw_sorted, calibrated, y


# Round 3 (docs/CALIBRATION.md, "Round 3"): the dead band and the aggregation, each on three
# feasible band-scale calibrators of round 2 (its choice, a faster and a slower scale)
BASES = [ROUND2, replace(ROUND2, scale_step=0.2), replace(ROUND2, scale_step=0.05, scale_power=0.5)]
GATES = [
    replace(b, gate_window=n, gate_width=d / 100)
    for b in BASES
    for n in (100, 250, 500)
    for d in (1.5, 3.0, 5.0)
]
HEDGES = [Hedge(b, eta, keep) for b in BASES for eta in (3, 10, 30, 100) for keep in (0.99, 0.998)]
# Round 4 (docs/CALIBRATION.md, "Round 4"): the same two methods tuned on bundles that never saw
# the scored series, so slower band scales and finer shifts join the grid, with dead bands on
# the band scales whose shift is constant over h
ROUND4_SCALES = [(g, 0.0) for g in (0.01, 0.02, 0.03, 0.05)]
ROUND4_SCALES += [(g, 0.5) for g in (0.02, 0.03, 0.05, 0.1)] + [(g, 1.0) for g in (0.05, 0.1, 0.2)]
ROUND4_SCALE_GRID = scale_grid(ROUND4_SCALES, (0.0, 0.001, 0.002, 0.005, 0.01))
ROUND4_GATES = [
    replace(b, gate_window=n, gate_width=d / 100)
    for b in ROUND4_SCALE_GRID
    if b.step in (0.002, 0.005) and b.horizon_power == 0.0
    for n in (100, 250)
    for d in (1.5, 3.0)
]


def scored_at(t: int, start: int, horizons: list[int]) -> list[tuple[int, int]]:
    """(horizon index, origin) of the forecasts whose outcome arrives at bar t."""
    return [(j, t - h) for j, h in enumerate(horizons) if t - h >= start]


def hedged(
    model: Model, close: np.ndarray, raw: np.ndarray, first: int, last: int, hedge: Hedge
) -> np.ndarray:
    """`Hedge`'s published quantiles at origins first..last."""
    start, raw_sorted, cal, y = expert_paths(model, close, raw, first, last, hedge.base)
    lv = np.asarray(model.levels)
    diff = np.zeros(len(model.horizons))
    out = np.empty_like(cal)
    for t in range(start, last + 1):
        for j, s in scored_at(t, start, model.horizons):
            r, c, yy = raw_sorted[s - start, j], cal[s - start, j], y[s - start, j]
            spread = max(r[-1] - r[0], 1e-9)
            gain = (pinball(yy, r, lv).mean() - pinball(yy, c, lv).mean()) / spread
            diff[j] = hedge.keep * diff[j] + gain
        w = (1.0 / (1.0 + np.exp(-hedge.eta * diff)))[:, None]
        out[t - start] = w * cal[t - start] + (1.0 - w) * raw_sorted[t - start]
    return out[first - start :]


def rolling_conformal(
    model: Model, close: np.ndarray, raw: np.ndarray, first: int, last: int, window: int
) -> np.ndarray:
    """Comparator: per (h, level) add the level's empirical quantile of the normalised errors
    (y - raw) / spread over the last `window` realized forecasts (split conformal, rolling)."""
    log_close = np.log(close)
    levels = np.asarray(model.levels)
    start = max(first - WARMUP, model.window - 1)
    spread = np.maximum(raw[:, :, -1] - raw[:, :, 0], 1e-9)
    out = np.empty((last - first + 1, *raw.shape[1:]))
    for t in range(first, last + 1):
        pub = raw[t].copy()
        for j, h in enumerate(model.horizons):
            o = np.arange(max(start, t - h - window + 1), t - h + 1)  # realized by close t
            if o.size >= 20:
                err = (log_close[o + h] - log_close[o])[:, None] - raw[o, j]
                corr = np.quantile(err / spread[o, j][:, None], levels, axis=0).diagonal()
                pub[j] += corr * spread[t, j]
        out[t - first] = np.sort(pub, axis=1)
    return out


def score(y: np.ndarray, q: np.ndarray, levels: list[float]) -> dict[str, Any]:
    lv = np.asarray(levels)
    i10, i90 = levels.index(0.1), levels.index(0.9)
    i05, i95 = levels.index(0.05), levels.index(0.95)
    in80 = (y > q[..., i10]) & (y <= q[..., i90])
    in90 = (y > q[..., i05]) & (y <= q[..., i95])
    return {
        "pinball": float(pinball(y, q, lv).mean()),
        "cov80": float(in80.mean()),
        "cov90": float(in90.mean()),
        "cov80_h": in80.mean(axis=0).tolist(),
        "cov90_h": in90.mean(axis=0).tolist(),
    }


@dataclass(frozen=True)
class Period:
    name: str
    close: np.ndarray
    first: int  # first scored origin
    last: int  # last scored origin (every target inside the period)


def training_period(name: str, horizons: list[int], which: str) -> Period:
    source, train_end, valid_end = TRAINING[name]
    series = load_close_series(DataSection(source=source))
    dates = pd.DatetimeIndex(series.index)
    t_end = int(dates.searchsorted(pd.Timestamp(train_end), side="right")) - 1
    v_end = int(dates.searchsorted(pd.Timestamp(valid_end), side="right")) - 1
    spans = {
        "valid": (t_end + 1, v_end),
        "test": (v_end + 1, len(series) - 1),
        # all bars before the test period once the calibrator has warmed up (robustness check
        # on series the SPX-only bundle never saw in training)
        "pretest": (WARMUP + 64, v_end),
    }
    lo, hi = spans[which]
    return Period(name, series.to_numpy(dtype=float), lo, hi - max(horizons))


def evaluation_period(name: str, horizons: list[int]) -> Period:
    series = load_close_series(DataSection(source=name))
    first = int(len(series) * (1 - EVAL_SHARE))
    return Period(
        str(series.name), series.to_numpy(dtype=float), first, len(series) - 1 - max(horizons)
    )


Method = Callable[[Model, np.ndarray, np.ndarray, int, int], np.ndarray]


def methods(final: bool, loso: bool = False) -> dict[str, Method]:
    """Label -> published `[N, H, Q]` at origins first..last, given (model, close, raw); `loso`
    adds round 4's settings."""
    if final:
        shipped = [CalibrationSettings.levels(0.0), PREVIOUS, ROUND2, ROUND3, ROUND4]
        shipped.append(CalibrationSettings())
        return {label(conf): partial(quantile_tracking, settings=conf) for conf in shipped}
    grid = [CalibrationSettings.levels(s, p) for s, p in LEVELS_GRID] + SCALE_GRID + GATES
    grid.append(ROUND4)
    if loso:
        grid += ROUND4_SCALE_GRID + ROUND4_GATES
    found: dict[str, Method] = {
        label(conf): partial(quantile_tracking, settings=conf) for conf in dict.fromkeys(grid)
    }
    found |= {label(h): partial(hedged, hedge=h) for h in HEDGES}
    return found | {f"rolling conformal {w}": partial(rolling_conformal, window=w) for w in ROLLING}


def run_period(model: Model, p: Period, final: bool, loso: bool = False) -> list[dict[str, Any]]:
    return score_period(model, p, methods(final, loso))


def score_period(
    model: Model,
    p: Period,
    found: dict[str, Method],
    base: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One series' rows: every method of `found` and the two baselines (GARCH fitted before the
    period), each with its ratios to both baselines; `base`: the baselines' forecasts at the
    period's origins, where the caller already has them."""
    log_close = np.log(p.close)
    origins = np.arange(p.first, p.last + 1)
    y = targets(log_close, origins, model.horizons)
    if base is None:
        base = baselines.baseline_forecasts(
            log_close, origins, model.horizons, model.levels, p.first - 1
        )
    raw = model.raw(p.close)
    scores = {
        label: score(y, fn(model, p.close, raw, p.first, p.last), model.levels)
        for label, fn in found.items()
    }
    scores |= {k: score(y, base[k], model.levels) for k in ("garch", "historical_quantiles")}
    garch, hist = scores["garch"]["pinball"], scores["historical_quantiles"]["pinball"]
    return [
        {"series": p.name, "method": label, "n": int(origins.size), **s}
        | {"vs_garch": s["pinball"] / garch, "vs_hist": s["pinball"] / hist}
        for label, s in scores.items()
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| series | method | n | pinball | /GARCH | /hist | 80% band | 90% band | 80% by h | 90% by h |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        by80 = "/".join(f"{100 * c:.0f}" for c in r["cov80_h"])
        by90 = "/".join(f"{100 * c:.0f}" for c in r["cov90_h"])
        print(
            f"| {r['series']} | {r['method']} | {r['n']} | {r['pinball']:.6f} | "
            f"{r['vs_garch']:.3f} | {r['vs_hist']:.3f} | {100 * r['cov80']:.1f}% | "
            f"{100 * r['cov90']:.1f}% | {by80} | {by90} |"
        )


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method over the series: worst |coverage - nominal| (pooled and per horizon), mean and
    worst pinball ratio to GARCH, to historical quantiles and to the better of the two (per
    series the larger ratio), and the mean of the latter: the numbers the choice is made on.
    Printed and returned."""
    print(
        "\n| method | worst 80% dev (pp) | worst 90% dev (pp) | worst per-h dev (pp) | mean /GARCH "
        "| worst /GARCH | worst /hist | worst /best baseline | mean /best baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    out = []
    for method, g in pd.DataFrame(rows).groupby("method", sort=False):
        devs = [abs(100 * (c - 0.8)) for c in g["cov80_h"].sum()]
        devs += [abs(100 * (c - 0.9)) for c in g["cov90_h"].sum()]
        r = {
            "method": method,
            "d80": (100 * (g["cov80"] - 0.8)).abs().max(),
            "d90": (100 * (g["cov90"] - 0.9)).abs().max(),
            "per_h": max(devs),
            "mean_garch": g["vs_garch"].mean(),
            "worst_garch": g["vs_garch"].max(),
            "worst_hist": g["vs_hist"].max(),
        }
        r["worst_best"] = max(r["worst_garch"], r["worst_hist"])
        r["mean_best"] = np.maximum(g["vs_garch"], g["vs_hist"]).mean()
        print(
            f"| {method} | {r['d80']:.1f} | {r['d90']:.1f} | {r['per_h']:.1f} | "
            f"{r['mean_garch']:.3f} | {r['worst_garch']:.3f} | {r['worst_hist']:.3f} | "
            f"{r['worst_best']:.3f} | {r['mean_best']:.3f} |"
        )
        out.append(r)
    return out


def choose(
    table: list[dict[str, Any]],
    max_dev: float = 3.0,
    slack: float = 0.005,
    by_mean: bool = True,
    max_per_h: float = float("inf"),
) -> str:
    """The selection rule (docs/CALIBRATION.md, "Round 3"): among settings whose worst pooled
    band deviation is <= max_dev pp (and worst single horizon's <= max_per_h pp), those whose
    worst ratio to the better baseline is within `slack` of the lowest; among them the lowest
    mean ratio to the better baseline (ties within 0.001: the smaller deviation); none feasible:
    the smallest deviation. `slack=0.001, by_mean=False` is round 2's rule (the smallest
    deviation among the lowest worst ratios); `max_dev=2.0, max_per_h=5.0` on the
    leave-one-series-out set is round 4's. Only the settings the agent could run compete (not
    the baselines or rolling conformal)."""
    table = [
        r
        for r in table
        if r["method"].startswith(("raw", "levels", "scale", "gate", "hedge", "blend", "mix"))
    ]
    dev = {r["method"]: max(r["d80"], r["d90"]) for r in table}
    feasible = [r for r in table if dev[r["method"]] <= max_dev and r["per_h"] <= max_per_h]
    if not feasible:
        return min(dev, key=dev.__getitem__)
    best = min(r["worst_best"] for r in feasible)
    near = [r for r in feasible if r["worst_best"] <= best + slack]
    if by_mean:
        lowest = min(r["mean_best"] for r in near)
        near = [r for r in near if r["mean_best"] <= lowest + 0.001]
    return min((r["method"] for r in near), key=dev.__getitem__)


def best_constant_shift(y: np.ndarray, q: np.ndarray, spread: np.ndarray, level: float) -> float:
    """Pinball of q + c * spread with the best constant c in hindsight (what removing a fixed
    bias could gain at most)."""
    grid = np.linspace(-0.5, 0.5, 401)
    shifted = q[:, None] + grid[None, :] * spread[:, None]
    loss = pinball(y[:, None], shifted[..., None], np.array([level]))[..., 0]
    return float(loss.mean(axis=0).min())


def diagnose(model: Model, p: Period, conf: CalibrationSettings = PREVIOUS) -> None:
    """Per horizon and level on one period: the raw model's pinball, what a calibration (default:
    the previous per-level tracking) and the best constant shift in hindsight make of it, and the
    calibration's correction (mean and sd, in units of the raw spread)."""
    origins = np.arange(p.first, p.last + 1)
    y = targets(np.log(p.close), origins, model.horizons)
    raw_all = model.raw(p.close)
    raw = raw_all[origins]
    prev = quantile_tracking(model, p.close, raw_all, p.first, p.last, conf)
    spread = raw[:, :, -1] - raw[:, :, 0]
    corr = (prev - raw) / spread[..., None]
    lv = np.asarray(model.levels)
    total_raw = pinball(y, raw, lv).mean()
    excess = (pinball(y, prev, lv).mean() - total_raw) / total_raw
    print(f"\n{p.name}: {label(conf)} costs {100 * excess:+.1f}% over raw")
    print(
        "| h | level | raw pinball | calibrated/raw | best const/raw | share of excess | corr mean | corr sd |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    cells = pinball(y, prev, lv) - pinball(y, raw, lv)
    for j, h in enumerate(model.horizons):
        for i, a in enumerate(model.levels):
            r = pinball(y[:, j], raw[:, j, i, None], np.array([a])).mean()
            c = pinball(y[:, j], prev[:, j, i, None], np.array([a])).mean()
            best = best_constant_shift(y[:, j], raw[:, j, i], spread[:, j], a)
            share = cells[:, j, i].sum() / cells.sum()
            print(
                f"| {h} | {a} | {r:.6f} | {c / r:.3f} | {best / r:.3f} | {100 * share:.0f}% | "
                f"{corr[:, j, i].mean():+.3f} | {corr[:, j, i].std():.3f} |"
            )


def ewma_vol(close: np.ndarray, window: int, lam: float = 0.94) -> np.ndarray:
    """The student's own volatility feature at every position (EWMA of the window's returns)."""
    r = np.diff(np.log(close))
    w = lam ** np.arange(window - 2, -1, -1)
    w /= w.sum()
    var = np.lib.stride_tricks.sliding_window_view(r * r, window - 1) @ w
    return np.concatenate([np.full(window - 1, np.nan), np.sqrt(var)])


def panel_features(model: Model) -> None:
    """What transfers across assets, on each training series' train period: the standardised
    targets y_h / (vol * sqrt(h)) and the student's volatility-level feature log(vol / SPX's)."""
    spx = training_period("SPX", model.horizons, "valid")
    spx_train_vol = float(np.diff(np.log(spx.close[: spx.first])).std())
    print(
        "\n| series | train windows | daily vol / SPX's | level feature mean (sd) | "
        + " | ".join(f"z{h} q05/q50/q95" for h in model.horizons)
        + " | raw 80% cov (valid) |"
    )
    print("|---|---:|---:|---:|" + "---|" * len(model.horizons) + "---:|")
    for name in TRAINING:
        p = training_period(name, model.horizons, "valid")
        vol = ewma_vol(p.close, model.window)
        log_close = np.log(p.close)
        origins = np.arange(model.window - 1, p.first - max(model.horizons))
        y = targets(log_close, origins, model.horizons)
        z = y / (vol[origins, None] * np.sqrt(model.horizons))
        zq = [np.quantile(z[:, j], [0.05, 0.5, 0.95]) for j in range(len(model.horizons))]
        level = np.log(vol[origins] / spx_train_vol)
        raw = model.raw(p.close)
        vo = np.arange(p.first, p.last + 1)
        cov = score(targets(log_close, vo, model.horizons), raw[vo], model.levels)["cov80"]
        print(
            f"| {name} | {origins.size} | {np.diff(log_close[: p.first]).std() / spx_train_vol:.2f} | "
            f"{level.mean():+.2f} ({level.std():.2f}) | "
            + " | ".join("/".join(f"{v:+.2f}" for v in q) for q in zq)
            + f" | {100 * cov:.1f}% |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--final", action="store_true", help="score test + evaluation series once")
    parser.add_argument(
        "--diagnose", action="store_true", help="split the tracking's cost by horizon and level"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="score the series never scored before round 3, once"
    )
    parser.add_argument(
        "--loso",
        type=Path,
        metavar="REGISTRY",
        help="round 4: tune on the leave-one-series-out bundles of scripts.loso_bundles here",
    )
    parser.add_argument(
        "--fresh4", action="store_true", help="score round 4's new series (FRESH4), once"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--pretest",
        action="store_true",
        help="tune on NDX, CAC, SMI before their test periods (unseen by an SPX-only bundle)",
    )
    args = parser.parse_args()
    model = Model.load(args.bundle)
    print(f"model {model.model_id}; warm-up {WARMUP} bars; default {CalibrationSettings()}")
    final = args.final or args.fresh or args.fresh4
    if args.loso:
        runs = [(m, training_period(n, m.horizons, "pretest")) for n, m in loso_models(args.loso)]
    else:
        runs = [(model, p) for p in periods(args, model.horizons)]
    if args.diagnose:
        for m, p in runs:
            diagnose(m, p)
        return
    rows = [row for m, p in runs for row in run_period(m, p, final, loso=bool(args.loso))]
    print_table(rows)
    table = summary(rows)
    if args.loso:
        print(f"\nround 4's rule chooses: {choose(table, max_dev=2.0, max_per_h=5.0)}")
    elif not (final or args.pretest):
        print(f"\nchosen by the rule: {choose(table)}")
        print(f"round 2's rule would choose: {choose(table, slack=0.001, by_mean=False)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if not (final or args.pretest or args.loso):
        panel_features(model)


def periods(args: argparse.Namespace, horizons: list[int]) -> list[Period]:
    """The periods the options ask for, scored with the bundle given."""
    if args.fresh or args.fresh4:
        return [evaluation_period(n, horizons) for n in (FRESH if args.fresh else FRESH4)]
    if args.final:
        found = [training_period(n, horizons, "test") for n in ("SPX", "NDX")]
        return found + [evaluation_period(n, horizons) for n in EVALUATION]
    if args.pretest:
        return [training_period(n, horizons, "pretest") for n in ("NDX", "CAC", "SMI")]
    return [training_period(n, horizons, "valid") for n in TRAINING]


def loso_models(registry: Path) -> list[tuple[str, Model]]:
    """Each training series with the newest bundle trained without it (scripts.loso_bundles)."""
    bundles = find_bundles(registry)  # sorted, so a model's newest version comes last
    found = []
    for name in TRAINING:
        versions = [b for b in bundles if b.parent.name == f"loso-{name.lower()}"]
        if not versions:
            raise SystemExit(f"no price/loso-{name.lower()} bundle in {registry}: run loso_bundles")
        found.append((name, Model.load(versions[-1])))
    return found


if __name__ == "__main__":
    main()
