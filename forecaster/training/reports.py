"""What every task's report.json and manifest share: the report's opening keys, the software it
was built with, sample counts and periods, the series a model read, and reading a report back."""

from __future__ import annotations

import json
import platform
from collections.abc import Sized
from pathlib import Path
from typing import Any

import onnxruntime
import pandas as pd
import torch

from device.manifest import REPORT_FILE
from forecaster.data import PriceSamples
from forecaster.errors import ForecasterError
from forecaster.recipe import Recipe

__all__ = [
    "environment",
    "load_report",
    "report_head",
    "sample_counts",
    "sample_periods",
    "series_source",
]


def report_head(task: str, recipe: Recipe, quick: bool) -> dict[str, Any]:
    """The first keys of every report: which task, which recipe, whether it was a quick run."""
    return {"task": task, "name": recipe.model.name, "quick": quick}


def environment(**libraries: str) -> dict[str, str]:
    """Python, torch, onnxruntime and the machine, plus any task-specific `libraries`
    (name=version), in the order reports have always listed them."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **libraries,
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.machine(),
    }


def sample_counts(train: Sized, valid: Sized, test: Sized) -> dict[str, int]:
    return {"train": len(train), "validation": len(valid), "test": len(test)}


def series_source(recipe: Recipe, close: pd.Series) -> dict[str, str | None]:
    """The manifest's `data` for a task that reads one close series."""
    path = recipe.data.path
    return {
        "source": recipe.data.source,
        "symbol": str(close.name),
        "path": str(path) if path else None,
    }


def sample_periods(train: PriceSamples, valid: PriceSamples, test: PriceSamples) -> dict[str, Any]:
    """The manifest's `periods`: first and last origin date of each period's samples."""
    return {"train": train.period(), "validation": valid.period(), "test": test.period()}


def load_report(bundle: Path) -> dict[str, Any]:
    """A bundle's report.json, with one-line errors for a missing or unreadable file."""
    path = bundle / REPORT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ForecasterError(f"{bundle} has no {REPORT_FILE}; is it a bundle directory?") from exc
    except (OSError, ValueError) as exc:
        raise ForecasterError(f"cannot read {path}: {exc}") from exc
