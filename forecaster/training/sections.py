"""A task's own recipe section (`[trend]`, `[gdp]`): validated by its pydantic model, with the
task's quick settings merged in for `--quick`, and one-line errors naming the bad key."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from device.configio import describe_validation
from forecaster.errors import RecipeError
from forecaster.recipe import Recipe, deep_merge

__all__ = ["task_section"]

SectionT = TypeVar("SectionT", bound=BaseModel)


def task_section(
    recipe: Recipe,
    name: str,
    model: type[SectionT],
    quick_defaults: dict[str, Any],
    quick: bool = False,
) -> SectionT:
    """The recipe's `[name]` table validated as `model`; with `quick`, the task's
    `quick_defaults` and then the recipe's `[quick.<name>]` are merged over it first."""
    raw = dict(getattr(recipe, name) or {})
    if quick:
        raw = deep_merge(deep_merge(raw, quick_defaults), recipe.quick.get(name, {}))
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        where = describe_validation(exc, (name,), first_only=True)
        raise RecipeError(f"recipe {recipe.source_path or ''}: {where}") from exc
