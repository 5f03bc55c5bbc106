"""The `[gdp]` recipe section: region, series, the DFM candidates, the student and its
simulated information sets, and the quick settings."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forecaster.data.macro import SERIES, SERIES_BY_NAME
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
    """One DynamicFactorMQ specification to try: `factors` global factors, or (with `blocks`)
    one factor per named block of series (NY Fed style) plus, with `global_factor`, one that
    every series loads on; GDP loads on all of them. `factor_orders` is each block's VAR order."""

    factors: int = Field(default=1, ge=1, le=4)
    blocks: dict[str, list[str]] | None = None
    global_factor: bool = True
    factor_orders: int = Field(default=1, ge=1, le=6)

    @model_validator(mode="after")
    def _blocks(self) -> DfmCandidate:
        if self.blocks is None:
            return self
        members = [s for names in self.blocks.values() for s in names]
        if not self.blocks or any(not names for names in self.blocks.values()):
            raise ValueError("blocks must name at least one block, each with its series")
        if len(set(members)) != len(members):
            raise ValueError("a series belongs to one block at most")
        if "global" in self.blocks:
            raise ValueError("'global' is the global factor's name, not a block's")
        return self

    def factor_map(self, series: list[str]) -> int | dict[str, list[str]]:
        """`DynamicFactorMQ`'s `factors` for a panel of `series` (plus `gdp`, which loads on
        every factor); a series outside every block loads on the global factor only."""
        if self.blocks is None:
            return self.factors
        top = ["global"] if self.global_factor else []
        block_of = {s: name for name, names in self.blocks.items() for s in names}
        out = {s: [*top, block_of[s]] if s in block_of else top for s in series}
        out["gdp"] = [*top, *self.blocks]
        return out


class GdpTeacherSettings(_Settings):
    """The DFM: candidate specifications (the best on validation wins), EM settings and how
    often parameters are re-estimated during the test period."""

    candidates: list[DfmCandidate] = Field(default_factory=lambda: [DfmCandidate()], min_length=1)
    idiosyncratic_ar1: bool = True
    maxiter: int = Field(default=200, ge=1)
    tolerance: float = Field(default=1e-6, gt=0)
    # once: parameters from the end of validation; yearly: also re-estimated every January
    refit: Literal["once", "yearly"] = "yearly"
    # series known to end before the test period (their source stops): candidates are scored
    # on validation with them hidden, the availability the test and any later use will have
    score_without: list[str] = Field(default_factory=list)


class GdpStudentSettings(_Settings):
    """The student (`kind`, see `NowcastStudent`), its band and its distillation over simulated
    information sets."""

    kind: Literal["mlp", "skip", "gated"] = "mlp"
    # the MLP's widths (for `gated`: the network over the masks that sets the value weights)
    hidden: list[int] = Field(default_factory=lambda: [32, 16], min_length=1)
    # the MLP reads standardized values clipped to +-clip (the linear path only at +-50)
    clip: float = Field(default=10.0, gt=0)
    # ridge penalty of the linear path's least squares (`skip`, `gated`), per train set
    ridge: float = Field(default=1e-4, ge=0)
    # the band's offsets: pooled, or one pair per information month (read from the masks)
    band: Literal["pooled", "by_month"] = "pooled"
    # the band's width factor 1 + band_scale * |nowcast - train mean| / train std (0: fixed)
    band_scale: float = Field(default=0.0, ge=0)
    # whose errors calibrate the band: validation's calendar sets, or train's and validation's
    band_sample: Literal["validation", "train_validation"] = "validation"
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
    # share of simulated sets with the teacher's `score_without` series hidden (the student
    # must learn the teacher's nowcast without them: the test period never has them)
    ended_prob: float = Field(default=0.0, ge=0, le=1)
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
    series: list[str] = Field(default_factory=lambda: [s.name for s in SERIES], min_length=1)
    # the student reads the months of this many quarters, ending with the target quarter
    window_quarters: int = Field(default=3, ge=2, le=8)
    max_valid_quarters: int | None = Field(default=None, ge=1)
    max_test_quarters: int | None = Field(default=None, ge=1)
    # test quarters whose nowcast track (one point per release) and news the report shows;
    # those outside the test period are skipped; none left: the last test quarter
    track_quarters: list[str] = Field(default_factory=list)
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

    @field_validator("track_quarters")
    @classmethod
    def _quarters(cls, value: list[str]) -> list[str]:
        for quarter in value:
            if not re.fullmatch(r"\d{4}Q[1-4]", quarter):
                raise ValueError(f"track quarter {quarter!r} is not YYYYQn")
        return value

    @model_validator(mode="after")
    def _teacher_names_series(self) -> GdpSection:
        named = set(self.teacher.score_without)
        for candidate in self.teacher.candidates:
            blocked = {s for names in (candidate.blocks or {}).values() for s in names}
            named |= blocked
            if candidate.blocks and not candidate.global_factor and set(self.series) - blocked:
                raise ValueError("without a global factor every series needs a block")
        unknown = sorted(named - set(self.series))
        if unknown:
            raise ValueError(f"teacher settings name series not in [gdp] series: {unknown}")
        return self


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
