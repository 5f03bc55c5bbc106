"""Train the leave-one-series-out panel bundles that round 4 of the calibration study tunes on
(docs/CALIBRATION.md, "Round 4"): for each training series, the committed panel recipe without
that series, with the shipped bundle's compression chain only. The held-out series is then new
to its bundle, as a user's own symbol is to the shipped one.

    python -m scripts.loso_bundles --registry DIR --chain distill+prune_quarter+cluster

`--vol-level window` trains them with another `[price] vol_level` than the recipe's and `--seed`
with another seed (round 8 compares the two input forms on these bundles, two seeds each; give
each its own registry); `--members 2` averages two students per bundle (round 9). Writes `DIR/price/loso-<symbol>/<version>` for SPX, NDX, CAC and SMI
(the model name says which series the bundle never saw) and prints the four directories.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from rich.console import Console

from forecaster.recipe import Recipe, load_recipe
from forecaster.tasks import load_task
from forecaster.training.nets import VolLevel

RECIPE = Path(__file__).resolve().parents[1] / "models" / "price" / "panel.toml"


def held_out(
    recipe: Recipe, symbol: str, chain: list[str], vol_level: VolLevel | None = None
) -> Recipe:
    """`recipe` without the series `symbol`, named after it, searching only `chain` (and with
    `vol_level` as the price input's level where given)."""
    kept = [s for s in recipe.data.entries() if s.symbol != symbol]
    if len(kept) == len(recipe.data.entries()):
        raise SystemExit(f"{symbol} is not a series of {RECIPE.name}")
    price = recipe.price
    if price is not None and vol_level:
        price = price.model_copy(update={"vol_level": vol_level})
    return recipe.model_copy(
        update={
            "price": price,
            "model": recipe.model.model_copy(update={"name": f"loso-{symbol.lower()}"}),
            "data": recipe.data.model_copy(update={"series": kept}),
            "compress": recipe.compress.model_copy(update={"chains": [chain]}),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--chain", required=True, help="the shipped chain, e.g. distill+svd")
    parser.add_argument("--key", type=Path, help="Ed25519 private key (else the registry's)")
    parser.add_argument("--only", nargs="+", help="these held-out symbols only")
    parser.add_argument("--vol-level", choices=get_args(VolLevel), help="default: the recipe's")
    parser.add_argument("--seed", type=int, help="default: the recipe's")
    parser.add_argument("--members", type=int, help="students averaged; default: the recipe's")
    args = parser.parse_args()
    recipe = load_recipe(RECIPE)
    if args.seed is not None:
        recipe = recipe.model_copy(update={"seed": args.seed})
    if args.members is not None:
        student = recipe.student.model_copy(update={"members": args.members})
        recipe = recipe.model_copy(update={"student": student})
    task = load_task("price")
    for series in recipe.data.entries():
        if args.only and series.symbol not in args.only:
            continue
        loso = held_out(recipe, str(series.symbol), args.chain.split("+"), args.vol_level)
        print(task.train(loso, args.registry, args.key, False, Console(stderr=True)), flush=True)


if __name__ == "__main__":
    main()
