"""The task registry: every recipe task has a package with a train function and a report."""

from __future__ import annotations

import pytest

from forecaster.errors import ForecasterError
from forecaster.recipe import ModelSection
from forecaster.tasks import TASK_NAMES, load_task


def test_every_recipe_task_is_registered() -> None:
    choices = set(ModelSection.model_fields["task"].annotation.__args__)  # type: ignore[union-attr]
    assert set(TASK_NAMES) == choices
    for name in TASK_NAMES:
        task = load_task(name)
        assert task.name == name
        assert callable(task.train) and callable(task.print_report)
    assert load_task("price").evaluate is not None


def test_an_unknown_task_is_one_line_error() -> None:
    with pytest.raises(ForecasterError, match="unknown task 'weather'; known: price, trend, gdp"):
        load_task("weather")
