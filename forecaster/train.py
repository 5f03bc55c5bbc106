"""`forecaster train`: dispatch a recipe to its task pipeline."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from forecaster.recipe import load_recipe

__all__ = ["train_recipe"]


def train_recipe(
    recipe_path: Path,
    registry: Path,
    quick: bool = False,
    key: Path | None = None,
    console: Console | None = None,
) -> Path:
    """Train the recipe's task and write a signed bundle; returns the bundle directory."""
    recipe = load_recipe(recipe_path)
    if quick:
        recipe = recipe.quickened()
    registry.mkdir(parents=True, exist_ok=True)
    if recipe.model.task == "price":
        from forecaster.tasks.price import train_price

        return train_price(recipe, registry, key, quick, console)
    if recipe.model.task == "gdp":
        from forecaster.tasks.gdp import train_gdp

        return train_gdp(recipe, registry, key, quick, console)
    from forecaster.tasks.trend import train_trend

    return train_trend(recipe, registry, key, quick, console)
