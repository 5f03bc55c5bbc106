"""Round 8 of the price calibration study (docs/CALIBRATION.md, "Round 8"): the student's level
input measured against the window's own volatility (`[price] vol_level = "window"`, scale-free)
instead of the pooled train volatility of the training series (`"train"`), chosen on the
leave-one-series-out bundles of both forms, each held-out series also scored with its log
returns scaled by `SCALES` (the same market at another volatility level).

    python -m scripts.loso_bundles --registry R --chain distill+prune_quarter+cluster \
        --vol-level train                                   # and --seed 1 into R1
    python -m scripts.loso_bundles --registry W --chain ... --vol-level window   # and W1
    python -m scripts.vol_level_study --loso train=R window=W train=R1 window=W1

Rows of the same NAME (the seeds) are pooled.

Grid and rule were committed before any of its numbers were seen. The scored spans are round
4's (`pretest`: each training series' bars before its test period); no test period and no
evaluation-only series is read. The test and evaluation series are scored after the choice, by
`scripts.gjr_study --final` and `scripts.bench_calibration` on the shipped recipe's bundles.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from device.calibration import CalibrationSettings
from scripts import price_calibration_study as study

# daily volatility x 0.5 (a currency's), x 1 (as shipped) and x 2 (a commodity's or a share's)
SCALES = (0.5, 1.0, 2.0)
# what the served forecasts are (round 6's default), and the model as it is
SETTINGS = [CalibrationSettings.levels(0.0), study.ROUND6]


def scaled(p: study.Period, factor: float) -> study.Period:
    """`p` with every log return multiplied by `factor`: the same path at another volatility."""
    log_close = np.log(p.close)
    close = np.exp(log_close[0] + factor * (log_close - log_close[0]))
    return replace(p, name=f"{p.name} x{factor:g}", close=close)


def family_rows(form: str, registry: Path) -> list[dict[str, Any]]:
    """Every held-out series at every scale, raw and served, labelled with the input form."""
    found: dict[str, study.Method] = {
        f"{study.label(c)} [{form}]": partial(study.quantile_tracking, settings=c) for c in SETTINGS
    }
    rows = []
    for name, model in study.loso_models(registry):
        base = study.training_period(name, model.horizons, "pretest")
        for factor in SCALES:
            rows += study.score_period(model, scaled(base, factor), found)
    return rows


def family(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=REGISTRY, e.g. window=/tmp/regw")
    return name, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loso", type=family, nargs="+", required=True, metavar="NAME=REGISTRY")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = [row for name, registry in args.loso for row in family_rows(name, registry)]
    study.print_table(rows)
    scored = [r for r in rows if r["method"] not in ("garch", "historical_quantiles")]
    print("\nAt the shipped scale only (rounds 4-7's set):")
    study.summary([r for r in scored if r["series"].endswith(" x1")])
    print(f"\nOver every scale (round 8's set, {len(SCALES)} scales per series):")
    pick = study.choose(study.summary(scored), max_dev=2.0, max_per_h=5.0)
    print(f"\nround 4's rule chooses: {pick}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
