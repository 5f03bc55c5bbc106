"""Choose the panel student's inputs on the POOLED validation windows of the training series
only (SPX, NDX, CAC, SMI): the MLP student trained directly on the true targets (the search's
`train` chain, no teacher) with each `vol_level` and each window length, a few seeds each. The
test periods are not read. Usage: `python -m scripts.panel_feature_study [--epochs N]
[--seeds K] [--levels train window both] [--windows 64 128 256] [--inputs 63]` (docs/PRICE.md,
and docs/CALIBRATION.md "Round 4" for the windows). `--inputs N`: the network sees only the last
N scaled returns of a longer window, whose own volatility the "window" level then measures
against (a long-memory input, studied here only)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from forecaster.recipe import Recipe, load_recipe
from forecaster.tasks.price import metrics
from forecaster.tasks.price.nets import MLPStudent
from forecaster.tasks.price.pipeline import PriceData, load_price_data
from forecaster.training import nets
from forecaster.training.loops import LoopSettings, fit_quantile_model, predict_torch
from forecaster.training.nets import VolLevel

RECIPE = Path(__file__).resolve().parents[1] / "models" / "price" / "panel.toml"


class LongMemoryFeatures(nets.ReturnFeatures):
    """`ReturnFeatures` of the last `inputs` returns, with the "window" level measured against
    the volatility of the whole (longer) window."""

    def __init__(self, inputs: int, train_vol: float, level: VolLevel) -> None:
        super().__init__(inputs + 1, train_vol, level=level)
        self.inputs = inputs

    def forward(self, close: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        short, level, vol = super().forward(close[:, -self.inputs - 1 :])
        if self.level == "train":
            return short, level, vol
        returns = torch.diff(torch.log(close), dim=1)
        floor = (nets._VOL_FLOOR * self.train_vol) ** 2
        to_long = torch.log(vol / torch.sqrt((returns * returns).mean(dim=1, keepdim=True) + floor))
        return (
            short,
            (to_long if self.level == "window" else torch.cat([level[:, :1], to_long], 1)),
            vol,
        )


def valid_pinball(
    recipe: Recipe, data: PriceData, level: VolLevel, seed: int, epochs: int, inputs: int | None
) -> list[float]:
    """Pooled and per-series validation pinball of one directly trained MLP student."""
    assert recipe.price is not None
    p, s = recipe.price, recipe.student
    torch.manual_seed(seed)
    width = inputs + 1 if inputs else p.window
    model = MLPStudent(width, p.horizons, p.quantiles, data.train_vol, s.hidden, level)
    if inputs:
        model.features = LongMemoryFeatures(inputs, data.train_vol, level)
    settings = LoopSettings(epochs, s.patience, s.lr, s.batch_size, seed)
    train, valid = (data.train.x, data.train.y), (data.valid.x, data.valid.y)
    fit_quantile_model(model, train, valid, p.quantiles, data.horizon_std, settings)
    sets = [data.valid] + [x.valid for x in data.series]
    return [
        metrics.price_metrics(v.y, predict_torch(model, v.x), p.horizons, p.quantiles)["pinball"][
            "overall"
        ]
        for v in sets
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--levels",
        nargs="+",
        choices=["train", "window", "both"],
        default=["train", "window", "both"],
    )
    parser.add_argument(
        "--windows", nargs="+", type=int, help="window lengths (default: the recipe's)"
    )
    parser.add_argument("--inputs", type=int, help="returns the network sees (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_recipe(RECIPE)
    assert base.price is not None
    for window in args.windows or [base.price.window]:
        recipe = base.model_copy(update={"price": base.price.model_copy(update={"window": window})})
        data = load_price_data(recipe)
        print(
            "| window | vol_level | seed | pooled valid pinball | "
            + " | ".join(x.symbol for x in data.series)
            + " |"
        )
        for level in args.levels:
            scores = []
            for seed in range(args.seeds):
                pooled, *each = valid_pinball(recipe, data, level, seed, args.epochs, args.inputs)
                scores.append(pooled)
                print(
                    f"| {window} | {level} | {seed} | {pooled:.6f} | "
                    + " | ".join(f"{v:.6f}" for v in each)
                    + " |",
                    flush=True,
                )
            print(f"| {window} | {level} | mean | {np.mean(scores):.6f} |", flush=True)


if __name__ == "__main__":
    main()
