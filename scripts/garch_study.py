"""Round 6 of the price calibration study (docs/CALIBRATION.md, "Round 6"): the raw quantiles
mixed with a GARCH(1,1)-t the agent fits on-line to each symbol's own returns (device/garch.py),
published as they are or calibrated, with dead bands that gauge the mix's own coverage.

    python -m scripts.garch_study --loso REGISTRY             # the choice: leave-one-series-out
    python -m scripts.garch_study --final BUNDLE_DIR          # once: test + evaluation series

`--loso` scores each training series' bars before its test period with the bundle of
`scripts.loso_bundles` that never saw it, for every setting of `GRID`, and applies round 4's rule
(`choose(table, max_dev=2.0, max_per_h=5.0)`). Grid and rule were committed before any of its
numbers were seen. `--final` scores the shipped default, rounds 4 and 5 and the raw model on
SPX's and NDX's test periods and every evaluation-only series, round 6's new ones (FRESH6) among
them; it steers nothing.
"""

from __future__ import annotations

from dataclasses import replace

from device.calibration import CalibrationSettings
from scripts.blend_study import FRESH5, study_main
from scripts.price_calibration_study import (
    EVALUATION,
    FRESH,
    FRESH4,
    ROUND4,
    ROUND5,
)

# evaluation-only series first scored in round 6, after its choice (forecaster/data/loaders.py)
FRESH6 = ["mscich", "djia1885"]
# what runs on the mix: nothing (the mix as it is), round 4's calibration without and with its
# dead band, and wider or longer dead bands (they gauge the mix, which is what they publish)
UNCORRECTED = CalibrationSettings(step=0.0, scale_step=0.0, gate_window=0, blend=0.0)
CALIBRATIONS = [
    UNCORRECTED,
    replace(ROUND4, gate_window=0),
    ROUND4,
    replace(ROUND4, gate_window=500),
    replace(ROUND4, gate_width=0.04),
    replace(ROUND4, gate_window=500, gate_width=0.04),
    replace(ROUND4, gate_width=0.05),
]
MIXES = (0.25, 0.5, 0.75)
MEMORY = (1000, 4000)
GRID = [ROUND4, ROUND5] + [
    replace(c, mix=w, garch_memory=m) for c in CALIBRATIONS for w in MIXES for m in MEMORY
]


def main() -> None:
    others = [*EVALUATION, *FRESH, *FRESH4, *FRESH5, *FRESH6]
    study_main(__doc__, GRID, [ROUND4, ROUND5, CalibrationSettings()], others)


if __name__ == "__main__":
    main()
