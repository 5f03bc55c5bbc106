"""What every compression step may use: train and validation windows (never test), the teacher
and the fine-tuning settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from forecaster.training.loops import (
    DistillTargets,
    FitResult,
    LoopSettings,
    augment_windows,
    fit_quantile_model,
    predict_torch,
)

__all__ = ["CompressContext", "FineTune"]

logger = logging.getLogger(__name__)

Evaluate = Callable[[np.ndarray, np.ndarray], dict[str, Any]]


@dataclass(frozen=True)
class FineTune:
    """Training settings for the steps that train or fine-tune a student."""

    epochs: int = 150
    patience: int = 20
    lr: float = 1e-3
    batch_size: int = 256


def _price_metrics(horizons: list[int], levels: list[float]) -> Evaluate:
    def evaluate(y: np.ndarray, q: np.ndarray) -> dict[str, Any]:
        from forecaster.tasks.price.metrics import price_metrics

        return price_metrics(y, q, horizons, levels)

    return evaluate


def _overall_pinball(metrics: dict[str, Any]) -> float:
    return float(metrics["pinball"]["overall"])


@dataclass
class CompressContext:
    """Data and settings shared by the steps of every chain. It holds the train and validation
    periods only: the search cannot consult the test period because it never sees it."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    horizons: list[int]
    levels: list[float]
    horizon_std: np.ndarray
    window: int
    teacher: nn.Module | None = None
    seed: int = 0
    # the student's first training (the `train` / `distill` steps)
    train: FineTune = field(default_factory=lambda: FineTune(epochs=300, patience=25, lr=3e-3))
    # recovery training after a step changed the weights
    finetune: FineTune = field(default_factory=FineTune)
    # weight of the teacher's quantiles when distilling and fine-tuning (0: true targets only)
    distill_weight: float = 0.5
    augment_copies: int = 2
    augment_noise: float = 0.1
    calibration_windows: int = 512
    evaluate: Evaluate | None = None
    score: Callable[[dict[str, Any]], float] = _overall_pinball
    _teacher_cache: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    _extra_cache: dict[tuple[int, float], np.ndarray] = field(default_factory=dict, repr=False)
    notes: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.evaluate is None:
            self.evaluate = _price_metrics(self.horizons, self.levels)

    def note(self, **details: Any) -> None:
        """Steps record what they decided (ranks, kept units, ...) for the report."""
        self.notes.update(details)

    def teacher_on(self, x: np.ndarray) -> np.ndarray:
        """The teacher's quantiles on `x`, computed once per array."""
        if self.teacher is None:
            raise ValueError("this step needs a teacher and the context has none")
        key = (id(x), len(x))
        if key not in self._teacher_cache:
            self._teacher_cache[key] = predict_torch(self.teacher, x)
        return self._teacher_cache[key]

    def augmented(self, copies: int, noise: float) -> np.ndarray:
        """Jittered copies of the train windows (seeded, so every chain sees the same ones)."""
        key = (copies, noise)
        if key not in self._extra_cache:
            rng = np.random.default_rng(self.seed)
            self._extra_cache[key] = augment_windows(self.x_train, copies, noise, rng)
        return self._extra_cache[key]

    def calibration(self) -> np.ndarray:
        """Evenly spaced train windows for quantization calibration and activation statistics."""
        n = min(self.calibration_windows, len(self.x_train))
        idx = np.linspace(0, len(self.x_train) - 1, n).round().astype(int)
        return self.x_train[idx]

    def fit(
        self,
        model: nn.Module,
        settings: FineTune | None = None,
        distill_weight: float | None = None,
        augment_copies: int | None = None,
        augment_noise: float | None = None,
    ) -> FitResult:
        """Train `model` in place with pinball loss, blended with the teacher's quantiles (also
        on jittered windows) when there is a teacher and a positive weight; early stopping on
        validation loss."""
        s = settings or self.finetune
        weight = self.distill_weight if distill_weight is None else distill_weight
        copies = self.augment_copies if augment_copies is None else augment_copies
        noise = self.augment_noise if augment_noise is None else augment_noise
        teach = self.teacher is not None and weight > 0
        x_extra = self.augmented(copies, noise) if teach else None
        teacher_train = self.teacher_on(self.x_train) if teach else None
        result = fit_quantile_model(
            model,
            (self.x_train, self.y_train),
            (self.x_valid, self.y_valid),
            self.levels,
            self.horizon_std,
            LoopSettings(s.epochs, s.patience, s.lr, s.batch_size, self.seed),
            DistillTargets(
                teacher_train,
                weight,
                x_extra,
                self.teacher_on(x_extra) if x_extra is not None else None,
            )
            if teacher_train is not None
            else None,
        )
        self.note(fit=dict(result.__dict__))
        return result
