"""The `[trend]` recipe section: regimes, window, teacher and student settings, and the quick
settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forecaster.recipe import Recipe
from forecaster.training.sections import task_section

__all__ = [
    "QUICK",
    "StudentSettings",
    "TeacherSettings",
    "TrendSection",
    "trend_section",
]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeacherSettings(_Settings):
    """The Markov-switching regime model, fitted by maximum likelihood on train returns."""

    kind: Literal["markov_regression"] = "markov_regression"
    switching_variance: bool = True
    # starting points: a persistent one, statsmodels' default, then random ones (best converged wins)
    starts: int = Field(default=3, ge=1)
    em_iter: int = Field(default=20, ge=0)
    maxiter: int = Field(default=500, ge=1)
    # fit on the last N train returns only (quick runs); None: the whole train period
    fit_last: int | None = Field(default=None, ge=100)


class StudentSettings(_Settings):
    """The MLP classifier and its distillation from the teacher's window filter."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [32, 32])
    epochs: int = Field(default=200, ge=1)
    patience: int = Field(default=20, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=256, ge=1)
    # weight of KL(teacher_T || student_T); 1 - it goes to cross-entropy on the ex-post labels
    distill_weight: float = Field(default=0.7, ge=0, le=1)
    temperature: float = Field(default=2.0, gt=0)
    # jittered copies of each train window, labelled by the teacher alone
    augment_copies: int = Field(default=2, ge=0)
    augment_noise: float = Field(default=0.1, ge=0)

    @model_validator(mode="after")
    def _widths(self) -> StudentSettings:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError("hidden must list positive layer widths")
        return self


class TrendSection(_Settings):
    """`[trend]` of a recipe: window, regime classes (lowest regime first), teacher, student."""

    window: int = Field(default=64, ge=8, le=1024)
    classes: list[str] = Field(default_factory=lambda: ["bear", "sideways", "bull"])
    k_regimes: int = Field(default=3, ge=2, le=5)
    # classes are assigned in increasing order of regime mean return (or mean / volatility)
    order_by: Literal["mean", "sharpe"] = "mean"
    # persistence baseline: the regime of `persistence_lag` days ago, as known today
    persistence_lag: int = Field(default=5, ge=1)
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    student: StudentSettings = Field(default_factory=StudentSettings)

    @model_validator(mode="after")
    def _consistent(self) -> TrendSection:
        if len(self.classes) != self.k_regimes:
            raise ValueError(
                f"classes names {len(self.classes)} regimes but k_regimes = {self.k_regimes}"
            )
        if len(set(self.classes)) != len(self.classes) or not all(self.classes):
            raise ValueError("classes must be distinct, non-empty names")
        if self.persistence_lag >= self.window:
            raise ValueError("persistence_lag must be shorter than the window")
        return self


# `--quick`: tests and demos, not for shipping; a recipe's [quick.trend] overrides these
QUICK: dict[str, Any] = {
    "teacher": {"starts": 1, "maxiter": 100, "em_iter": 5, "fit_last": 1500},
    "student": {"epochs": 25, "patience": 5, "augment_copies": 0},
}


def trend_section(recipe: Recipe, quick: bool = False) -> TrendSection:
    """The validated `[trend]` section (with the quick settings when asked)."""
    return task_section(recipe, "trend", TrendSection, QUICK, quick)
