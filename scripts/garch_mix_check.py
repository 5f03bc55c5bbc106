"""A check for the next calibration round (docs/CALIBRATION.md, "Round 5", "A check for the next
round"): the student's raw quantiles mixed with the fitted GARCH(1,1)-t baseline's, before the
calibration, on the leave-one-series-out set (training series only; steers no shipped setting).

    python -m scripts.garch_mix_check --loso REGISTRY

For each training series' bars before its test period, scored by the bundle that never saw it:
`w * garch + (1 - w) * raw` for w in `WEIGHTS` (the GARCH fitted on the data before the scored
bars, as the baseline is), published as it is, under round 5's default, and under round 4's
(whose dead band publishes the mix while its bands cover within 3 pp). What a per-symbol
GARCH-t fitted in the agent could reach, not what it does: the agent fits no GARCH today.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from device.calibration import CalibrationSettings
from forecaster.tasks.price import baselines
from scripts.price_calibration_study import (
    ROUND4,
    Model,
    Period,
    loso_models,
    quantile_tracking,
    score,
    summary,
    targets,
    training_period,
    warm_start,
)

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
CALIBRATIONS = {"as is": None, "round 5": CalibrationSettings(), "round 4": ROUND4}


def mixed_rows(model: Model, p: Period) -> list[dict[str, Any]]:
    """One series' rows: every weight under every calibration, with both baselines' ratios."""
    log_close = np.log(p.close)
    raw = model.raw(p.close)
    span = np.arange(warm_start(model, p.first), p.last + 1)
    garch = baselines.garch_quantiles(log_close, span, model.horizons, model.levels, p.first - 1)
    origins = np.arange(p.first, p.last + 1)
    y = targets(log_close, origins, model.horizons)
    hist = baselines.historical_quantiles(log_close, origins, model.horizons, model.levels)
    garch_loss = score(y, garch[p.first - span[0] :], model.levels)["pinball"]
    hist_loss = score(y, hist, model.levels)["pinball"]
    rows = []
    for w in WEIGHTS:
        mixed = raw.copy()
        mixed[span] = w * garch + (1 - w) * raw[span]
        for name, conf in CALIBRATIONS.items():
            q = (
                mixed[origins]
                if conf is None
                else quantile_tracking(model, p.close, mixed, p.first, p.last, conf)
            )
            s = score(y, q, model.levels)
            rows.append(
                {"series": p.name, "method": f"mix {w}, {name}", "n": int(origins.size), **s}
                | {"vs_garch": s["pinball"] / garch_loss, "vs_hist": s["pinball"] / hist_loss}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loso", type=Path, metavar="REGISTRY", required=True)
    args = parser.parse_args()
    rows = []
    for name, model in loso_models(args.loso):
        rows += mixed_rows(model, training_period(name, model.horizons, "pretest"))
    for r in rows:
        print(
            f"| {r['series']} | {r['method']} | {r['vs_garch']:.4f} | {r['vs_hist']:.4f} | "
            f"{100 * r['cov80']:.1f}% | {100 * r['cov90']:.1f}% |"
        )
    summary(rows)


if __name__ == "__main__":
    main()
