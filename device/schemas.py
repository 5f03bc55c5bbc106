"""JSON payloads of the MQTT contract, validated with pydantic on both sides of the wire."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BUNDLE_CONTENT_TYPE",
    "COMMAND_CONTENT_TYPE",
    "AgentStatus",
    "Bar",
    "DeadLetter",
    "DeployCommand",
    "FleetEvent",
    "InformationSet",
    "LiveAccuracy",
    "MacroRelease",
    "ModelRef",
    "Nowcast",
    "NowcastBand",
    "NowcastFailure",
    "NowcastHistory",
    "NowcastRequest",
    "PriceForecast",
    "ReleaseImpact",
    "TrackEntry",
    "TrendForecast",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class Bar(BaseModel):
    """One daily (or intraday) OHLCV bar on `market/<symbol>/bar`; `seq` increases per symbol."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    symbol: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.^-]+$")
    ts: datetime
    open: float = Field(gt=0)
    high: float = Field(gt=0)
    low: float = Field(gt=0)
    close: float = Field(gt=0)
    volume: float = Field(ge=0)
    # At most int64: the agent keeps the last seq in sqlite, which cannot store a larger one.
    seq: int = Field(ge=0, le=2**63 - 1)

    _check_finite = field_validator("open", "high", "low", "close", "volume")(_finite)


class MacroRelease(BaseModel):
    """One released value of a monthly or quarterly indicator on `macro/<series>`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    series: str = Field(min_length=1, max_length=64)
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$|^\d{4}Q[1-4]$")
    value: float
    released_at: datetime

    _check_finite = field_validator("value")(_finite)


class ModelRef(BaseModel):
    """Which bundle produced an output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    sha256: str


class _ForecastHead(BaseModel):
    """The leading fields of a price or trend forecast: which agent, bar and model it is for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    agent: str
    symbol: str
    model: ModelRef
    ts: datetime
    seq: int


class PriceForecast(_ForecastHead):
    """Quantiles of cumulative log return per horizon, and the price levels they imply."""

    last_close: float
    horizons: list[int]
    quantiles: list[float]
    returns: list[list[float]] = Field(
        description="Published quantiles [horizon][quantile] of the cumulative log return from "
        "last_close: the model's output after the agent's on-line calibration, never crossing."
    )
    prices: list[list[float]] = Field(description="last_close * exp(returns).")
    # Of the onnxruntime call that computed it (shared with the bars batched into that call).
    latency_ms: float
    produced_at: datetime = Field(default_factory=utcnow)
    # Issue 12: what the model said and what the calibration changed (returns = raw + correction).
    raw: list[list[float]] | None = Field(
        default=None,
        description="The model's own quantiles [horizon][quantile] of log return, before "
        "calibration; null when the agent does not calibrate (then returns are the raw output).",
    )
    correction: list[list[float]] | None = Field(
        default=None,
        description="returns - raw: what the agent did per horizon and quantile: the quantiles "
        "mixed one part in four with a GARCH(1,1)-t fitted on-line to this symbol's closes, "
        "then, where that mix's bands covered off their level lately, rescaled and shifted by "
        "this model's earlier forecasts on this symbol (docs/CALIBRATION.md); null when the "
        "agent does not calibrate.",
    )
    # True when the window skips seq numbers (bars lost upstream or served by another agent):
    # the forecast is not computed on the symbol's true last `window` closes.
    seq_gap: bool = False


class TrendForecast(_ForecastHead):
    """Regime probabilities for one symbol after one bar."""

    classes: list[str]
    proba: list[float]
    latency_ms: float
    produced_at: datetime = Field(default_factory=utcnow)
    # True when the window skips seq numbers (bars lost upstream or served by another agent):
    # the forecast is not computed on the symbol's true last `window` closes.
    seq_gap: bool = False


class LiveAccuracy(BaseModel):
    """How one price model did on one symbol: its published forecasts scored against the closes
    that followed, over the last `window` scored forecasts of each horizon, pooled over horizons."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="<task>/<name>@<version>")
    symbol: str
    window: int = Field(description="Scored forecasts kept per horizon.")
    scored: int = Field(description="Scored forecasts behind these numbers, summed over horizons.")
    pinball: float = Field(
        description="Mean pinball loss over horizons and quantiles (log return)."
    )
    coverage: dict[str, float] = Field(
        description="Share of outcomes inside each central band, keyed by its nominal percentage, "
        'e.g. {"80": 0.78, "90": 0.9} for the 10-90% and 5-95% bands.'
    )


class AgentStatus(BaseModel):
    """Retained heartbeat on `fleet/<agent>/status`; the last will publishes `online=False`."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    online: bool
    ts: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    uptime_s: float = 0.0
    models: list[dict[str, Any]] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=dict)
    latency_ms: dict[str, float] = Field(default_factory=dict)
    warming: dict[str, str] = Field(default_factory=dict)
    # Pool membership ({"index": k, "count": n}), the symbols served, seq gaps per symbol.
    partition: dict[str, int] = Field(default_factory=dict)
    symbols: list[str] = Field(default_factory=list)
    seq_gaps: dict[str, int] = Field(default_factory=dict)
    # Bundles found but not loaded (bad signature, hash mismatch, failed smoke test): path, reason.
    rejected: list[dict[str, str]] = Field(default_factory=list)
    # Live accuracy per served price model and symbol with at least one scored forecast.
    accuracy: list[LiveAccuracy] = Field(default_factory=list)


class DeadLetter(BaseModel):
    """A rejected input message, with the reason and a truncated copy of its payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    topic: str
    reason: str
    payload: str
    received_at: datetime = Field(default_factory=utcnow)


class FleetEvent(BaseModel):
    """Deploy results, rollbacks and errors on `fleet/<agent>/events`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    kind: str
    ok: bool
    detail: str = ""
    model: ModelRef | None = None
    ts: datetime = Field(default_factory=utcnow)
    # Deploys and rollbacks: the version `model` replaced, and per symbol the seq of the last bar
    # that version forecast; every later bar of that symbol is forecast by `model`.
    previous: ModelRef | None = None
    after_seq: dict[str, int] = Field(default_factory=dict)


# fleet/<agent>/deploy carries either a packed bundle or a JSON command; the MQTT v5 content type
# says which, so neither has to be sniffed.
BUNDLE_CONTENT_TYPE = "application/vnd.forecaster.bundle+gzip"
COMMAND_CONTENT_TYPE = "application/json"


class DeployCommand(BaseModel):
    """An operator's command on `fleet/<agent>/deploy`, e.g. roll `price/spx` back one version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["rollback"]
    model: str = Field(pattern=r"^(price|trend|gdp)/[A-Za-z0-9_.-]+$")
    version: str | None = None


class NowcastBand(BaseModel):
    """The band around a nowcast: its low and high ends and the quantile levels they stand for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lo: float
    hi: float
    levels: tuple[float, float]


class InformationSet(BaseModel):
    """What the nowcast was made from: the input window, the latest released period of every
    series, and how many input cells were not released (NaN in the model's input)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    months: tuple[str, str]
    gdp_quarters: tuple[str, str]
    latest: dict[str, str | None]
    missing: int
    cells: int


class ReleaseImpact(BaseModel):
    """What one release did to the nowcast: its value (and the value it revised, if any) and
    its impact in percentage points, from the student itself (device/news.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    series: str
    period: str
    value: float
    previous: float | None = None  # the value this release revised; None for a first release
    released_at: datetime
    impact_pp: float


class Nowcast(BaseModel):
    """The current-quarter GDP nowcast, retained on `nowcast/gdp/<region>` and the reply to
    `nowcast/gdp/<region>/get`; `as_of` is the latest release time it saw.

    `previous` is the student's nowcast of the same quarter on the information before the latest
    release time (for the quarter's first nowcast: the opening value on the information the
    previous quarter ended with); `revision = nowcast - previous`, and `impacts` (one per release
    at that time) sum to it: exactly in `sequential`, to float64 rounding in `shapley`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    region: str
    quarter: str = Field(pattern=r"^\d{4}Q[1-4]$")
    nowcast: float
    units: str = "% q/q annualized"
    band: NowcastBand
    information: InformationSet
    model: ModelRef
    as_of: datetime
    produced_at: datetime = Field(default_factory=utcnow)
    latency_ms: float
    previous: float | None = None
    revision: float = 0.0
    impacts: list[ReleaseImpact] = Field(default_factory=list)
    attribution: Literal["sequential", "shapley"] = "sequential"


class TrackEntry(BaseModel):
    """One step of the nowcast track: the nowcast after the releases of one release time, the
    revision they made and each one's impact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quarter: str = Field(pattern=r"^\d{4}Q[1-4]$")
    time: datetime  # the release time
    nowcast: float
    band: NowcastBand
    previous: float
    revision: float
    impacts: list[ReleaseImpact]
    model: ModelRef
    produced_at: datetime


class NowcastHistory(BaseModel):
    """The reply to `nowcast/gdp/<region>/get` with `{"history": true}`: the latest nowcast and
    the track of its quarter and the previous one, oldest first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    region: str
    nowcast: Nowcast
    track: list[TrackEntry]


class NowcastRequest(BaseModel):
    """The body of `nowcast/gdp/<region>/get` (an empty body is `{}`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    history: bool = False


class NowcastFailure(BaseModel):
    """The reply to a nowcast request the agent cannot answer (unknown region, no data yet)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    region: str
    error: str
    ts: datetime = Field(default_factory=utcnow)
