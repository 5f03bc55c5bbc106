"""The task registry: each task (price quantiles, trend regimes, GDP nowcast) lives in its own
package, `forecaster.tasks.<name>`, whose `TASK` says how to train it, print its report and
(where it can) evaluate a bundle on another series. A new task is a new package plus its name
in `TASK_NAMES` (and in the recipe's `model.task` choices)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from forecaster.errors import ForecasterError
from forecaster.recipe import Recipe, load_recipe

__all__ = ["TASK_NAMES", "Task", "load_task", "train_recipe"]

TASK_NAMES = ("price", "trend", "gdp")

TrainFn = Callable[[Recipe, Path, Path | None, bool, Console | None], Path]
PrintReportFn = Callable[[Path, dict[str, Any], Console, str], None]
EvaluateFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Task:
    """What the CLI needs from a task: `train(recipe, registry, key, quick, console)` writes a
    signed bundle and returns its directory; `print_report(bundle, report, console, split)`;
    `evaluate` scores a bundle on another series (None where the task has no such command)."""

    name: str
    train: TrainFn
    print_report: PrintReportFn
    evaluate: EvaluateFn | None = None


def load_task(name: str) -> Task:
    """The registered task called `name`; its package (torch and all) is imported only now."""
    if name not in TASK_NAMES:
        raise ForecasterError(f"unknown task {name!r}; known: {', '.join(TASK_NAMES)}")
    task = importlib.import_module(f"forecaster.tasks.{name}").TASK
    assert isinstance(task, Task)
    return task


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
    return load_task(recipe.model.task).train(recipe, registry, key, quick, console)
