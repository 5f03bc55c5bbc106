"""A check for the next calibration round (docs/CALIBRATION.md, "Round 5", "A check for the next
round"): the student's raw quantiles mixed with the fitted GARCH(1,1)-t baseline's, before the
calibration, on the leave-one-series-out set (training series only; steers no shipped setting).

    python -m scripts.garch_mix_check --loso REGISTRY

For each training series' bars before its test period, scored by the bundle that never saw it:
`w * garch + (1 - w) * raw` for w in `WEIGHTS` (the GARCH fitted on the data before the scored
bars, as the baseline is), published as it is, under round 5's default, and under round 4's
(whose dead band publishes the mix while its bands cover within 3 pp): what a per-symbol
GARCH-t in the agent could reach with the baseline itself. The on-line fit the agent runs since
round 6 is scored by scripts/garch_study.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device.calibration import CalibrationSettings
from forecaster.tasks.price import baselines
from scripts.price_calibration_study import (
    ROUND4,
    ROUND5,
    Method,
    Model,
    Period,
    choose,
    loso_models,
    print_table,
    quantile_tracking,
    score_period,
    summary,
    training_period,
    warm_start,
)

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
CALIBRATIONS = {"as is": None, "round 5": ROUND5, "round 4": ROUND4}


def mixed(garch: np.ndarray, w: float | np.ndarray, conf: CalibrationSettings | None) -> Method:
    """`w * garch + (1 - w) * raw` on the bars `garch` covers (the calibrator's warm-up and the
    scored period; `w` a constant or one weight per bar, horizon and level, broadcast), published
    as it is or calibrated by `conf`."""

    def publish(
        model: Model, close: np.ndarray, raw: np.ndarray, first: int, last: int
    ) -> np.ndarray:
        mix, span = raw.copy(), slice(last + 1 - len(garch), last + 1)
        mix[span] = w * garch + (1 - w) * raw[span]
        if conf is None:
            return mix[first : last + 1]
        return quantile_tracking(model, close, mix, first, last, conf)

    return publish


def mixed_rows(model: Model, p: Period) -> list[dict[str, Any]]:
    """One series' rows: every weight under every calibration, and both baselines."""
    span = np.arange(warm_start(model, p.first), p.last + 1)
    log_close = np.log(p.close)
    base = baselines.baseline_forecasts(log_close, span, model.horizons, model.levels, p.first - 1)
    found = {
        f"mix {w}, {name}": mixed(base["garch"], w, conf)
        for w in WEIGHTS
        for name, conf in CALIBRATIONS.items()
    }
    at_origins = {k: v[p.first - span[0] :] for k, v in base.items()}
    return score_period(model, p, found, at_origins)


def loso_check(doc: str, series_rows: Callable[[Model, Period], list[dict[str, Any]]]) -> None:
    """A check's command line: `series_rows` on each training series' bars before its test
    period, scored by the bundle that never saw it; the table, the summary and what round 4's
    rule would choose (the checks steer nothing)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--loso", type=Path, metavar="REGISTRY", required=True)
    args = parser.parse_args()
    rows = []
    for name, model in loso_models(args.loso):
        rows += series_rows(model, training_period(name, model.horizons, "pretest"))
    print_table(rows)
    table = summary([r for r in rows if r["method"] not in ("garch", "historical_quantiles")])
    print(f"\nround 4's rule would choose: {choose(table, max_dev=2.0, max_per_h=5.0)}")


def main() -> None:
    loso_check(__doc__, mixed_rows)


if __name__ == "__main__":
    main()
