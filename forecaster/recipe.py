"""Model recipes (`models/<task>/<name>.toml`): data, split, task, teacher, student, compression."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device.configio import ConfigFileError, describe_validation, read_toml, resolve_path
from forecaster.errors import RecipeError

__all__ = [
    "CompressSection",
    "DataSection",
    "FineTuneSection",
    "PriceSection",
    "Recipe",
    "SeriesSection",
    "SplitSection",
    "StudentSection",
    "TeacherSection",
    "deep_merge",
    "load_recipe",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    task: Literal["price", "trend", "gdp"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")


class SplitSection(_Section):
    """train: start .. train_end; validation: after train_end .. valid_end; test: after valid_end."""

    start: date | None = None
    train_end: date
    valid_end: date
    end: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SplitSection:
        if self.valid_end <= self.train_end:
            raise ValueError("valid_end must come after train_end")
        return self


class SeriesSection(_Section):
    """One close series: a built-in dataset (`sp500`, `nasdaq`, `cac`, ...) or `csv` with a
    path and column names; `split` overrides the recipe's dates (a series that ends earlier)."""

    source: str = "sp500"
    symbol: str | None = None
    path: Path | None = None
    date_column: str = "date"
    value_column: str = "close"
    split: SplitSection | None = None

    @model_validator(mode="after")
    def _csv_needs_path(self) -> SeriesSection:
        if self.source == "csv" and self.path is None:
            raise ValueError("source = 'csv' needs `path`")
        return self

    @property
    def label(self) -> str:
        """The series' name in reports: its symbol, else its source."""
        return self.symbol or (self.path.stem if self.path else self.source)


class DataSection(SeriesSection):
    """One series (`source`, `symbol`, ... as keys of `[data]`) or several (`[[data.series]]`
    tables, each a `SeriesSection`): a price model then trains on their pooled windows."""

    series: list[SeriesSection] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_or_many(self) -> DataSection:
        if self.split is not None:
            raise ValueError("a one-series [data] takes its dates from [split], not data.split")
        if not self.series:
            return self
        mixed = sorted(self.model_fields_set - {"series"})
        if mixed:
            raise ValueError(
                f"[data] with [[data.series]] takes no {', '.join(mixed)}: set it per series"
            )
        labels = [s.label for s in self.series]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"data.series names {', '.join(repeated)} twice; give each a symbol")
        return self

    def entries(self) -> list[SeriesSection]:
        """Every series the recipe names, in order (one for a one-series [data])."""
        return list(self.series) if self.series else [self]


class PriceSection(_Section):
    window: int = Field(default=64, ge=8, le=1024)
    horizons: list[int] = Field(default_factory=lambda: [1, 5, 20])
    quantiles: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.5, 0.9, 0.95])
    # the volatility-level input: log(EWMA vol / train-period vol) ("train", one series' own
    # scale) or log(EWMA vol / the window's equal-weight vol) ("window", scale-free across
    # assets), or both inputs ("both")
    vol_level: Literal["train", "window", "both"] = "train"

    @model_validator(mode="after")
    def _valid(self) -> PriceSection:
        if not self.horizons or any(h < 1 for h in self.horizons):
            raise ValueError("horizons must be positive integers")
        if sorted(set(self.horizons)) != self.horizons:
            raise ValueError("horizons must be strictly increasing")
        qs = self.quantiles
        if not qs or sorted(set(qs)) != qs or any(not 0 < q < 1 for q in qs):
            raise ValueError("quantiles must be strictly increasing values in (0, 1)")
        if not qs[0] <= 0.5 <= qs[-1]:
            raise ValueError("quantiles must include or surround 0.5 (the median forecast)")
        return self


class TeacherSection(_Section):
    kind: Literal["lstm"] = "lstm"
    hidden: int = Field(default=128, ge=4)
    layers: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    epochs: int = Field(default=60, ge=1)
    patience: int = Field(default=8, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0)


class StudentSection(_Section):
    kind: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [32, 32])
    epochs: int = Field(default=300, ge=1)
    patience: int = Field(default=25, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    # weight of the teacher's quantiles in the distillation loss; 1 - it goes to the true targets
    distill_weight: float = Field(default=0.5, ge=0, le=1)
    # extra copies of each training window, jittered, labelled by the teacher alone
    augment_copies: int = Field(default=2, ge=0)
    augment_noise: float = Field(default=0.1, ge=0)
    # students averaged in the shipped graph: each runs the chosen chain from its own seed
    # (the recipe's seed + k), so one training run's draw counts for less (price task)
    members: int = Field(default=1, ge=1, le=8)


class FineTuneSection(_Section):
    """Recovery training after a compression step (pruning, factorization, clustering, QAT)."""

    epochs: int = Field(default=150, ge=1)
    patience: int = Field(default=20, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=256, ge=1)


class CompressSection(BaseModel):
    """Compression chains to try and the accuracy budget (validation metric vs the teacher).
    `steps` holds per-step parameters, keyed by the label a chain uses; a label that is not a
    step name names its step with `step = "..."` (docs/COMPRESSION.md)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    budget: float = Field(default=1.02, ge=1.0)
    chains: list[list[str]] = Field(default_factory=lambda: [["distill", "quantize_dynamic"]])
    steps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    finetune: FineTuneSection = Field(default_factory=FineTuneSection)
    # train windows used to calibrate static quantization and rank units for pruning
    calibration_windows: int = Field(default=512, ge=16)
    # single-thread batch-1 runs per candidate for the latency median / p99
    benchmark_runs: int = Field(default=2000, ge=50)


class Recipe(_Section):
    model: ModelSection
    data: DataSection
    split: SplitSection
    price: PriceSection | None = None
    trend: dict[str, Any] | None = None
    gdp: dict[str, Any] | None = None
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    student: StudentSection = Field(default_factory=StudentSection)
    compress: CompressSection = Field(default_factory=CompressSection)
    seed: int = 0
    # settings used by `--quick`: tests and demos, not for shipping
    quick: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source_path: Path | None = None

    @model_validator(mode="after")
    def _task_section(self) -> Recipe:
        if self.data.series and self.model.task != "price":
            raise ValueError(
                f"[[data.series]] is for price recipes; a {self.model.task} recipe reads one series"
            )
        if self.model.task == "price" and self.price is None:
            return self.model_copy(update={"price": PriceSection()})
        return self

    @property
    def base_dir(self) -> Path:
        return self.source_path.parent if self.source_path else Path.cwd()

    def csv_path(self, series: SeriesSection | None = None) -> Path:
        """A CSV series' path (the one-series [data]'s by default), relative paths taken from
        the recipe's own directory."""
        path = (series or self.data).path
        assert path is not None
        return resolve_path(path, self.base_dir)

    def series_splits(self) -> list[tuple[SeriesSection, SplitSection]]:
        """Every series with the split dates it uses: its own, else the recipe's."""
        return [(s, s.split or self.split) for s in self.data.entries()]

    def quickened(self) -> Recipe:
        """The fast variant for tests and demos: small teacher, few epochs (overridable in [quick])."""
        defaults: dict[str, dict[str, Any]] = {
            "teacher": {"hidden": 32, "layers": 1, "epochs": 3, "patience": 2},
            "student": {"epochs": 40, "patience": 10, "augment_copies": 1},
            "compress": {
                "chains": [["distill"], ["distill", "prune_structured", "quantize_dynamic"]],
                "finetune": {"epochs": 8, "patience": 3},
                "benchmark_runs": 300,
            },
        }
        update: dict[str, Any] = {}
        for section in sorted(set(defaults) | set(self.quick)):
            current = getattr(self, section)
            overrides = deep_merge(defaults.get(section, {}), self.quick.get(section, {}))
            if isinstance(current, BaseModel):
                update[section] = current.model_validate(
                    deep_merge(current.model_dump(), overrides)
                )
            else:
                update[section] = deep_merge(current or {}, overrides)
        return self.model_copy(update=update)


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied key by key; nested tables merge instead of replacing."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(path: Path) -> Recipe:
    """Parse and validate a recipe, with one-line errors naming the file and the bad key."""
    try:
        raw = read_toml(path, "recipe")
    except ConfigFileError as exc:
        raise RecipeError(str(exc)) from exc
    try:
        return Recipe.model_validate({**raw, "source_path": path.resolve()})
    except ValidationError as exc:
        raise RecipeError(f"recipe {path}: {describe_validation(exc, first_only=True)}") from exc
