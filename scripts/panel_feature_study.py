"""Choose the panel student's volatility-level input on the POOLED validation windows of the
training series only (SPX, NDX, CAC, SMI): the MLP student trained directly on the true targets
(the search's `train` chain, no teacher) with each `vol_level`, a few seeds each. The test
periods are not read. Usage: `python -m scripts.panel_feature_study [--epochs N] [--seeds K]`."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from forecaster.recipe import load_recipe
from forecaster.tasks.price import metrics
from forecaster.tasks.price.nets import MLPStudent
from forecaster.tasks.price.pipeline import load_price_data
from forecaster.training.loops import LoopSettings, fit_quantile_model, predict_torch

RECIPE = Path(__file__).resolve().parents[1] / "models" / "price" / "panel.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--levels", nargs="+", default=["train", "window", "both"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = load_recipe(RECIPE)
    assert recipe.price is not None
    p, s = recipe.price, recipe.student
    data = load_price_data(recipe)
    print(
        "| vol_level | seed | pooled valid pinball | "
        + " | ".join(x.symbol for x in data.series)
        + " |"
    )
    for level in args.levels:
        scores = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = MLPStudent(p.window, p.horizons, p.quantiles, data.train_vol, s.hidden, level)
            settings = LoopSettings(args.epochs, s.patience, s.lr, s.batch_size, seed)
            fit_quantile_model(
                model,
                (data.train.x, data.train.y),
                (data.valid.x, data.valid.y),
                p.quantiles,
                data.horizon_std,
                settings,
            )
            pooled = metrics.price_metrics(
                data.valid.y, predict_torch(model, data.valid.x), p.horizons, p.quantiles
            )["pinball"]["overall"]
            each = [
                metrics.price_metrics(
                    x.valid.y, predict_torch(model, x.valid.x), p.horizons, p.quantiles
                )["pinball"]["overall"]
                for x in data.series
            ]
            scores.append(pooled)
            print(
                f"| {level} | {seed} | {pooled:.6f} | "
                + " | ".join(f"{v:.6f}" for v in each)
                + " |",
                flush=True,
            )
        print(f"| {level} | mean | {np.mean(scores):.6f} |", flush=True)


if __name__ == "__main__":
    main()
