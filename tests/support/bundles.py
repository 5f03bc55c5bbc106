"""Trained bundles handed between fixtures, tests and scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["TrainedBundle"]


@dataclass(frozen=True)
class TrainedBundle:
    """A bundle trained once per test session with `--quick`, and the keys that trust it."""

    path: Path
    registry: Path
    keys_dir: Path
