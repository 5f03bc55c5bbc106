"""A check for the next calibration round (docs/CALIBRATION.md, "Round 6", "A check for the next
round"): the weight of the on-line GARCH-t in the mix learnt per symbol and horizon from the two
experts' own scored pinball, on the leave-one-series-out set (training series only; steers no
shipped setting).

    python -m scripts.garch_weight_check --loso REGISTRY

The agent's fit (device/garch.py, started with the calibrator `WARMUP` bars before the scored
period) and the raw model are scored on every forecast whose outcome has arrived; per horizon the
weight is exponentially weighted averaging of the two (Cesa-Bianchi & Lugosi 2006, ch. 2):
`logit w = logit w0 - eta * (Lg - Lr) / mean(Lg, Lr)`, L each expert's pinball discounted by
`keep` per scored forecast. The mix is published as it is or under round 6's calibration (its
dead band and band scale, without its own constant mix). What the agent could reach, not what
it does.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from device.calibration import pinball
from scripts.garch_mix_check import loso_check, mixed
from scripts.garch_study import UNCORRECTED
from scripts.price_calibration_study import (
    ROUND6,
    Method,
    Model,
    Period,
    calibrated_path,
    quantile_tracking,
    score_period,
    warm_start,
)

WEIGHTINGS = [(w0, eta, keep) for w0 in (0.25, 0.5) for eta in (2, 8, 32) for keep in (0.99, 0.998)]
CALIBRATIONS = {"as is": None, "round 6's calibration": replace(ROUND6, mix=0.0)}


def learnt_weights(
    model: Model,
    close: np.ndarray,
    raw: np.ndarray,
    fit: np.ndarray,
    start: int,
    weighting: tuple[float, float, float],
) -> np.ndarray:
    """Per bar and horizon the GARCH's weight `[n, H, 1]`, from the forecasts scored so far."""
    w0, eta, keep = weighting
    levels = np.asarray(model.levels)
    log_close = np.log(close)
    n, hz = len(fit), model.horizons
    prior = math.log(w0 / (1 - w0))
    losses = np.zeros((len(hz), 2))  # discounted pinball: raw, garch
    w = np.full((n, len(hz), 1), w0)
    for i in range(n):
        t = start + i
        for j, h in enumerate(hz):
            if i >= h:
                y = np.asarray(log_close[t] - log_close[t - h])
                pair = np.stack([raw[t - h, j], fit[i - h, j]])
                losses[j] = keep * losses[j] + pinball(y, pair, levels).mean(axis=-1)
                lr, lg = losses[j]
                w[i, j, 0] = 1 / (1 + math.exp(-(prior - eta * (lg - lr) / (0.5 * (lg + lr)))))
    return w


def weight_rows(model: Model, p: Period) -> list[dict[str, Any]]:
    """One series' rows: every weighting under both calibrations, round 6 as shipped, both
    baselines."""
    start = warm_start(model, p.first)
    raw = model.raw(p.close)
    # the agent's own fit, as its calibrator publishes it with the mix all GARCH and nothing on
    # top (the raw output until the fit has seen enough returns)
    fit = calibrated_path(model, p.close, raw, p.last, start, replace(UNCORRECTED, mix=1.0))
    found: dict[str, Method] = {
        "mix 0.25 (round 6 as shipped)": partial(quantile_tracking, settings=ROUND6)
    }
    for weighting in WEIGHTINGS:
        w = learnt_weights(model, p.close, raw, fit, start, weighting)
        for name, conf in CALIBRATIONS.items():
            label = (
                f"mix learnt from {weighting[0]}, eta {weighting[1]}, keep {weighting[2]}; {name}"
            )
            found[label] = mixed(fit, w, conf)
    return score_period(model, p, found)


def main() -> None:
    loso_check(__doc__, weight_rows)


if __name__ == "__main__":
    main()
