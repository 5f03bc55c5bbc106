"""What every task's report.json shares: its opening keys, the software it was built with,
the sample counts per period, and reading it back from a bundle."""

from __future__ import annotations

import json
import platform
from collections.abc import Sized
from pathlib import Path
from typing import Any

import onnxruntime
import torch

from device.manifest import REPORT_FILE
from forecaster.errors import ForecasterError
from forecaster.recipe import Recipe

__all__ = ["environment", "load_report", "report_head", "sample_counts"]


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


def load_report(bundle: Path) -> dict[str, Any]:
    """A bundle's report.json, with one-line errors for a missing or unreadable file."""
    path = bundle / REPORT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ForecasterError(f"{bundle} has no {REPORT_FILE}; is it a bundle directory?") from exc
    except (OSError, ValueError) as exc:
        raise ForecasterError(f"cannot read {path}: {exc}") from exc
