"""The `[gdp]` recipe section: region, series, the DFM candidates, the student and its
simulated information sets, and the quick settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from forecaster.data.macro import SERIES_BY_NAME
from forecaster.recipe import Recipe
from forecaster.training.sections import task_section

__all__ = [
    "QUICK",
    "DfmCandidate",
    "GdpSection",
    "GdpStudentSettings",
    "GdpTeacherSettings",
    "gdp_section",
]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DfmCandidate(_Settings):
    """One DynamicFactorMQ specification to try: global factors and their VAR order."""

    factors: int = Field(default=1, ge=1, le=4)
    factor_orders: int = Field(default=1, ge=1, le=6)


class GdpTeacherSettings(_Settings):
    """The DFM: candidate specifications (the best on validation wins), EM settings and how
    often parameters are re-estimated during the test period."""

    candidates: list[DfmCandidate] = Field(default_factory=lambda: [DfmCandidate()], min_length=1)
    idiosyncratic_ar1: bool = True
    maxiter: int = Field(default=200, ge=1)
    tolerance: float = Field(default=1e-6, gt=0)
    # once: parameters from the end of validation; yearly: also re-estimated every January
    refit: Literal["once", "yearly"] = "yearly"


class GdpStudentSettings(_Settings):
    """The MLP student and its distillation over simulated information sets."""

    hidden: list[int] = Field(default_factory=lambda: [32, 16], min_length=1)
    epochs: int = Field(default=400, ge=1)
    patience: int = Field(default=40, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    # weight of the teacher's nowcast in the centre's loss; 1 - it goes to actual GDP
    distill_weight: float = Field(default=1.0, ge=0, le=1)
    # simulated information sets per train quarter (plus the three calendar ones)
    sims_per_quarter: int = Field(default=40, ge=0)
    delay_prob: float = Field(default=0.2, ge=0, le=1)
    absent_prob: float = Field(default=0.05, ge=0, le=1)
    hole_prob: float = Field(default=0.03, ge=0, le=1)
    # share of simulated sets whose indicator swings are scaled up or down (see SimulationPolicy)
    amplify_prob: float = Field(default=0.3, ge=0, le=1)
    amplify_max: float = Field(default=3.0, ge=1)
    # simulated sets per validation quarter, added to the calendar ones for early stopping
    valid_sims_per_quarter: int = Field(default=10, ge=0)
    # distil on the last N train quarters only (quick runs); None: all of them
    max_train_quarters: int | None = Field(default=None, ge=4)
    latency_runs: int = Field(default=2000, ge=50)

    @field_validator("hidden")
    @classmethod
    def _widths(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError("hidden must list positive layer widths")
        return value


class GdpSection(_Settings):
    """`[gdp]` of a recipe: region, indicators (in input order), the window the student reads,
    how many validation / test quarters to score, teacher and student."""

    region: str = Field(default="us", pattern=r"^[a-z0-9_-]+$")
    series: list[str] = Field(default_factory=lambda: list(SERIES_BY_NAME), min_length=1)
    # the student reads the months of this many quarters, ending with the target quarter
    window_quarters: int = Field(default=3, ge=2, le=8)
    max_valid_quarters: int | None = Field(default=None, ge=1)
    max_test_quarters: int | None = Field(default=None, ge=1)
    teacher: GdpTeacherSettings = Field(default_factory=GdpTeacherSettings)
    student: GdpStudentSettings = Field(default_factory=GdpStudentSettings)

    @field_validator("series")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in SERIES_BY_NAME]
        if unknown:
            raise ValueError(f"unknown series {unknown}; choose from {list(SERIES_BY_NAME)}")
        if len(set(value)) != len(value):
            raise ValueError("series must not repeat")
        return value


# `--quick`: tests and demos, not for shipping; a recipe's [quick.gdp] overrides these
QUICK: dict[str, Any] = {
    "max_valid_quarters": 4,
    "max_test_quarters": 4,
    "teacher": {"candidates": [{"factors": 1, "factor_orders": 1}], "maxiter": 10, "refit": "once"},
    "student": {
        "epochs": 30,
        "patience": 10,
        "sims_per_quarter": 3,
        "valid_sims_per_quarter": 1,
        "max_train_quarters": 12,
        "latency_runs": 200,
    },
}


def gdp_section(recipe: Recipe, quick: bool = False) -> GdpSection:
    """The validated `[gdp]` section (with the quick settings when asked)."""
    return task_section(recipe, "gdp", GdpSection, QUICK, quick)
