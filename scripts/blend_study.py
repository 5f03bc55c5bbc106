"""Round 5 of the price calibration study (docs/CALIBRATION.md, "Round 5"): the raw bands pulled
toward a long-memory GARCH(1,1) variance kept per symbol, before the calibration.

    python -m scripts.blend_study --loso REGISTRY             # the choice: leave-one-series-out
    python -m scripts.blend_study --final BUNDLE_DIR          # once: test + evaluation series

`--loso` scores each training series' bars before its test period with the bundle of
`scripts.loso_bundles` that never saw it (round 4's tuning set), for every setting of `GRID`, and
applies round 4's rule. Grid and rule were committed before any of its numbers were seen.
`--final` scores round 5's default (`ROUND5`), the previous one (round 4) and the raw model on
SPX's and NDX's test periods and every evaluation-only series, round 5's new ones (FRESH5) among
them; it steers nothing.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from device.calibration import CalibrationSettings
from scripts.price_calibration_study import (
    EVALUATION,
    FRESH,
    FRESH4,
    ROUND4,
    ROUND5,
    Method,
    Model,
    Period,
    choose,
    evaluation_period,
    label,
    loso_models,
    print_table,
    quantile_tracking,
    score_period,
    summary,
    training_period,
)

# evaluation-only series first scored in round 5, after its choice: gold and silver, two German
# shares, sterling's effective rate and the mark-pound rate (forecaster/data/loaders.py)
FRESH5 = ["gold", "silver", "bmw", "siemens", "gbpeer", "demgbp"]
# calibrations the blend runs under: round 4's, without its dead band, with a narrower dead
# band, and with a faster band scale (the blend moves the raw coverage the dead band gauges)
CALIBRATIONS = [
    ROUND4,
    replace(ROUND4, gate_window=0),
    replace(ROUND4, gate_window=100, gate_width=0.015),
    replace(ROUND4, scale_step=0.05),
]
BLENDS = (0.25, 0.5, 0.75, 1.0)
GARCH = [(0.05, 0.93), (0.08, 0.9), (0.1, 0.85)]
MEMORY = (250, 1000, 4000)
GRID = CALIBRATIONS + [
    replace(c, blend=w, vol_alpha=a, vol_beta=b, vol_memory=m)
    for c in CALIBRATIONS
    for w in BLENDS
    for a, b in GARCH
    for m in MEMORY
]


def run(model: Model, p: Period, grid: list[CalibrationSettings]) -> list[dict[str, Any]]:
    """One series' rows: the raw model, every setting and the two baselines."""
    settings = [CalibrationSettings.levels(0.0), *grid]  # levels(0.0): the raw output, sorted
    found: dict[str, Method] = {label(c): partial(quantile_tracking, settings=c) for c in settings}
    return score_period(model, p, found)


def study_main(
    doc: str,
    grid: list[CalibrationSettings],
    final_grid: list[CalibrationSettings],
    others: list[str],
) -> None:
    """A round's command line: `--loso` scores `grid` on the leave-one-series-out set and applies
    round 4's rule; `--final` scores `final_grid` on SPX's and NDX's test periods and `others`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--loso", type=Path, metavar="REGISTRY", help="tune: leave one out")
    group.add_argument("--final", type=Path, metavar="BUNDLE_DIR", help="score once")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(f"default {CalibrationSettings()}")
    if args.loso:
        runs = [(m, training_period(n, m.horizons, "pretest")) for n, m in loso_models(args.loso)]
    else:
        model = Model.load(args.final)
        found = [training_period(n, model.horizons, "test") for n in ("SPX", "NDX")]
        found += [evaluation_period(n, model.horizons) for n in others]
        runs = [(model, p) for p in found]
        grid = list(dict.fromkeys(final_grid))  # the default may be one of them
    rows = [row for m, p in runs for row in run(m, p, grid)]
    print_table(rows)
    table = summary([r for r in rows if r["method"] not in ("garch", "historical_quantiles")])
    if args.loso:
        print(f"\nround 4's rule chooses: {choose(table, max_dev=2.0, max_per_h=5.0)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def main() -> None:
    study_main(__doc__, GRID, [ROUND4, ROUND5], [*EVALUATION, *FRESH, *FRESH4, *FRESH5])


if __name__ == "__main__":
    main()
