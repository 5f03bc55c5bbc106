"""Round 7 of the price calibration study (docs/CALIBRATION.md, "Round 7"): round 6's mix with
the agent's on-line GARCH-t in the GJR form (a negative shock raises the next variance more,
`CalibrationSettings.garch_leverage`), published as it is or calibrated.

    python -m scripts.gjr_study --loso REGISTRY             # the choice: leave-one-series-out
    python -m scripts.gjr_study --final BUNDLE_DIR          # once: test + evaluation series

`--loso` scores each training series' bars before its test period with the bundle of
`scripts.loso_bundles` that never saw it, for every setting of `GRID`, and applies round 4's rule
(`choose(table, max_dev=2.0, max_per_h=5.0)`). Grid and rule were committed before any of its
numbers were seen. `--final` scores the shipped default and rounds 4 to 6 on SPX's and NDX's
test periods and every evaluation-only series; it steers nothing.
"""

from __future__ import annotations

from dataclasses import replace

from device.calibration import CalibrationSettings
from scripts.blend_study import FRESH5, study_main
from scripts.garch_study import FRESH6, UNCORRECTED
from scripts.price_calibration_study import EVALUATION, FRESH, FRESH4, ROUND4, ROUND5, ROUND6

# what runs on the GJR mix: nothing, round 4's calibration without a dead band, round 4's
# (250 forecasts / 3 pp) and round 6's (500 / 3 pp)
CALIBRATIONS = [UNCORRECTED, replace(ROUND4, gate_window=0), ROUND4, ROUND6]
MIXES = (0.25, 0.5, 0.75)
GRID = [ROUND4, ROUND5, ROUND6] + [
    replace(c, mix=w, garch_memory=4000, garch_leverage=True) for c in CALIBRATIONS for w in MIXES
]


def main() -> None:
    others = [*EVALUATION, *FRESH, *FRESH4, *FRESH5, *FRESH6]
    study_main(__doc__, GRID, [ROUND4, ROUND5, ROUND6, CalibrationSettings()], others)


if __name__ == "__main__":
    main()
