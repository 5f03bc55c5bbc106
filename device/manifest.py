"""`BundleManifest`: the signed description of a model bundle (docs/ARCHITECTURE.md, "The contracts")."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "REPORT_FILE",
    "SCHEMA_VERSION",
    "SIGNATURE_FILE",
    "TEACHER_FILE",
    "BundleManifest",
    "CompressionStep",
    "Periods",
    "TensorSpec",
]

SCHEMA_VERSION: Literal[1] = 1
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
REPORT_FILE = "report.json"
TEACHER_FILE = "teacher.onnx"

Task = Literal["price", "trend", "gdp"]


class TensorSpec(BaseModel):
    """Name, shape (ints, or a name for a dynamic axis) and dtype of one graph input or output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: list[int | str]
    dtype: str = "float32"


class Periods(BaseModel):
    """Date ranges actually used for training, validation and test (ISO dates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: tuple[date, date]
    validation: tuple[date, date]
    test: tuple[date, date]


class CompressionStep(BaseModel):
    """One applied compression step and its parameters, in the order applied."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class BundleManifest(BaseModel):
    """What a device needs to know to run, trust and describe a student model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    task: Task
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    created_at: datetime
    model_file: str = MODEL_FILE
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_id: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    window: int | None = Field(default=None, ge=2)
    horizons: list[int] | None = None
    quantiles: list[float] | None = None
    classes: list[str] | None = None
    series: list[str] | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    periods: Periods
    compression: list[CompressionStep] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _task_fields(self) -> BundleManifest:
        if self.task in ("price", "trend") and self.window is None:
            raise ValueError(f"a {self.task} manifest needs `window`")
        if self.task == "price":
            if not self.horizons or any(h < 1 for h in self.horizons):
                raise ValueError("a price manifest needs positive `horizons`")
            qs = self.quantiles or []
            if not qs or any(not 0 < q < 1 for q in qs) or sorted(set(qs)) != qs:
                raise ValueError("`quantiles` must be strictly increasing values in (0, 1)")
        if self.task == "trend" and not self.classes:
            raise ValueError("a trend manifest needs `classes`")
        if self.task == "gdp" and not self.series:
            raise ValueError("a gdp manifest needs `series`")
        return self

    @property
    def model_id(self) -> str:
        """`<task>/<name>`, the model id: a device serves one version of each; versions replace
        each other."""
        return f"{self.task}/{self.name}"
