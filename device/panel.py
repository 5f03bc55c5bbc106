"""The GDP nowcast's indicator panel on the device: the latest released value per (series,
period), kept in the agent's state database, and the student's input tensors built from it exactly
as the cloud builds an information set (`forecaster.data.macro.MacroPanel.info_set`).

Periods are `YYYY-MM` (monthly indicators) or `YYYYQn` (GDP); internally they are counted as
months or quarters since year 0 so windows are plain integer ranges.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

import numpy as np

from device.errors import ConfigError, ModelError, PayloadError
from device.manifest import BundleManifest
from device.news import Cell
from device.outbox import StateWrite
from device.runtime import OnnxModel
from device.schemas import MacroRelease

__all__ = [
    "GDP_SERIES",
    "Change",
    "GdpLayout",
    "Released",
    "ReleasedPanel",
    "check_release",
    "load_panel",
    "month_index",
    "month_label",
    "panel_write",
    "probe_gdp_outputs",
    "quarter_index",
    "quarter_label",
    "quarter_of",
]

logger = logging.getLogger(__name__)

# The series name of the quarterly target on `macro/<series>` (the cloud's `GDP`).
GDP_SERIES = "gdp"
INPUT_MONTHLY, INPUT_GDP = "monthly", "gdp"
OUTPUT_NOWCAST, OUTPUT_BAND = "nowcast", "band"

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS macro_panel (
    series TEXT NOT NULL,
    period TEXT NOT NULL,
    value REAL NOT NULL,
    released_at TEXT NOT NULL,  -- ISO 8601, UTC
    PRIMARY KEY (series, period)
)
"""


def month_index(period: str) -> int:
    """`YYYY-MM` -> months since year 0; ValueError for anything else."""
    found = _MONTH.match(period)
    if found is None:
        raise ValueError(f"{period!r} is not a month (YYYY-MM)")
    return int(found[1]) * 12 + int(found[2]) - 1


def quarter_index(period: str) -> int:
    """`YYYYQn` -> quarters since year 0; ValueError for anything else."""
    found = _QUARTER.match(period)
    if found is None:
        raise ValueError(f"{period!r} is not a quarter (YYYYQn)")
    return int(found[1]) * 4 + int(found[2]) - 1


def month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def quarter_label(index: int) -> str:
    return f"{index // 4:04d}Q{index % 4 + 1}"


def quarter_of(ts: datetime) -> int:
    """The quarter (index) a moment falls in, in UTC."""
    ts = ts.astimezone(UTC)
    return ts.year * 4 + (ts.month - 1) // 3


def _utc(ts: datetime) -> datetime:
    # Naive times are UTC, as in the cloud's release calendar.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _period_start(series: str, period: str) -> datetime:
    if series == GDP_SERIES:
        q = quarter_index(period)
        return datetime(q // 4, 3 * (q % 4) + 1, 1, tzinfo=UTC)
    m = month_index(period)
    return datetime(m // 12, m % 12 + 1, 1, tzinfo=UTC)


def check_release(release: MacroRelease, known: tuple[str, ...]) -> MacroRelease:
    """The release with `released_at` in UTC, or PayloadError: a series no GDP model reads, a
    period of the wrong frequency (GDP is quarterly, indicators monthly), or a value released
    before its period began."""
    if release.series not in known:
        raise PayloadError(
            f"unknown series {release.series!r}: the GDP model reads {', '.join(known)}"
        )
    try:
        start = _period_start(release.series, release.period)
    except ValueError as exc:
        kind = "quarterly" if release.series == GDP_SERIES else "monthly"
        raise PayloadError(f"{release.series} is {kind}: {exc}") from exc
    released_at = _utc(release.released_at)
    if released_at < start:
        raise PayloadError(
            f"{release.series} {release.period} released at {released_at.isoformat()}, "
            "before the period began"
        )
    return release.model_copy(update={"released_at": released_at})


@dataclass(frozen=True, slots=True)
class Released:
    value: float
    released_at: datetime


class Change(Enum):
    """How a release relates to what the panel holds for its (series, period)."""

    NEW = "new"
    SAME = "same"  # same value again: an idempotent redelivery
    REVISION = "revision"  # a later release with another value: replaces it
    STALE = "stale"  # another value released no later than the stored one: out of order


class ReleasedPanel:
    """The latest released value of every (series, period) and the latest release time seen."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Released]] = {}
        self.as_of: datetime | None = None

    def __len__(self) -> int:
        return sum(len(v) for v in self._values.values())

    def classify(self, release: MacroRelease) -> Change:
        stored = self._values.get(release.series, {}).get(release.period)
        if stored is None:
            return Change.NEW
        if stored.value == release.value:
            return Change.SAME
        return Change.REVISION if release.released_at > stored.released_at else Change.STALE

    def apply(self, release: MacroRelease) -> Change:
        """Store a NEW or REVISION release (with a UTC `released_at`); returns what it was."""
        change = self.classify(release)
        if change in (Change.NEW, Change.REVISION):
            self._put(release.series, release.period, release.value, release.released_at)
        return change

    def _put(self, series: str, period: str, value: float, released_at: datetime) -> None:
        self._values.setdefault(series, {})[period] = Released(value, released_at)
        if self.as_of is None or released_at > self.as_of:
            self.as_of = released_at

    def get(self, series: str, period: str) -> Released | None:
        return self._values.get(series, {}).get(period)

    def latest(self, series: str) -> str | None:
        """The most recent period of `series` with a released value."""
        periods = self._values.get(series)
        if not periods:
            return None
        key = quarter_index if series == GDP_SERIES else month_index
        return max(periods, key=key)

    def inputs(self, layout: GdpLayout, quarter: int) -> tuple[np.ndarray, np.ndarray]:
        """The student's `monthly [1, W, N]` and `gdp [1, L]` float32 inputs for `quarter`:
        the W months ending with its last month (oldest first, columns in the layout's series
        order) and GDP growth of the L quarters before it; NaN where nothing was released."""
        last_month = 3 * quarter + 2
        months = [month_label(m) for m in range(last_month - layout.months + 1, last_month + 1)]
        monthly = np.array(
            [[self._value(series, month) for series in layout.series] for month in months]
        )
        gdp = np.array(
            [
                self._value(GDP_SERIES, quarter_label(q))
                for q in range(quarter - layout.gdp_lags, quarter)
            ]
        )
        # float64 first, then float32: the same rounding as the cloud's `stack_inputs`
        return monthly[None].astype(np.float32), gdp[None].astype(np.float32)

    def _value(self, series: str, period: str) -> float:
        found = self._values.get(series, {}).get(period)
        return np.nan if found is None else found.value


@dataclass(frozen=True)
class GdpLayout:
    """How a GDP bundle reads the panel, from its manifest: indicator order, window length in
    months, GDP lags, and the band's quantile levels."""

    series: tuple[str, ...]
    months: int
    gdp_lags: int
    band_levels: tuple[float, float]
    region: str

    @property
    def known(self) -> tuple[str, ...]:
        """Every series this model reads from `macro/<series>`."""
        return (*self.series, GDP_SERIES)

    def cell(self, quarter: int, series: str, period: str) -> Cell | None:
        """Where the value of (series, period) sits in the inputs for `quarter` (index without
        the batch axis), or None when this quarter's window does not read it."""
        if series == GDP_SERIES:
            lag = quarter_index(period) - (quarter - self.gdp_lags)
            return (INPUT_GDP, (lag,)) if 0 <= lag < self.gdp_lags else None
        if series not in self.series:
            return None
        row = month_index(period) - (3 * quarter + 3 - self.months)
        return (INPUT_MONTHLY, (row, self.series.index(series))) if 0 <= row < self.months else None

    @classmethod
    def from_manifest(cls, m: BundleManifest) -> GdpLayout:
        """Raises ModelError when the manifest does not describe the GDP student contract."""
        shapes = {t.name: t.shape for t in m.inputs}
        outputs = [t.name for t in m.outputs]
        monthly, gdp = shapes.get(INPUT_MONTHLY), shapes.get(INPUT_GDP)
        series = tuple(m.series or ())
        if (
            monthly is None
            or gdp is None
            or len(monthly) != 3
            or len(gdp) != 2
            or monthly[2] != len(series)
            or not isinstance(monthly[1], int)
            or not isinstance(gdp[1], int)
            or sorted(outputs) != sorted((OUTPUT_NOWCAST, OUTPUT_BAND))
            or len(m.quantiles or ()) != 2
        ):
            raise ModelError(
                f"{m.model_id}: a gdp bundle needs inputs monthly [batch, months, "
                f"{len(series)}] and gdp [batch, lags], outputs nowcast and band, and two "
                "band quantiles"
            )
        lo, hi = m.quantiles or (0.0, 0.0)
        region = str(m.data.get("region", "us"))
        if not re.fullmatch(r"[a-z0-9_-]+", region):
            raise ModelError(f"{m.model_id}: region {region!r} cannot be a topic level")
        return cls(series, monthly[1], gdp[1], (lo, hi), region)


def probe_gdp_outputs(model: OnnxModel) -> None:
    """Run a GDP model once on an empty panel (everything NaN) and check its outputs."""
    layout = GdpLayout.from_manifest(model.manifest)
    monthly, gdp = ReleasedPanel().inputs(layout, 0)
    outputs, _ = model.run({INPUT_MONTHLY: monthly, INPUT_GDP: gdp})
    nowcast, band = outputs[OUTPUT_NOWCAST], outputs[OUTPUT_BAND]
    if nowcast.shape != (1,) or band.shape != (1, 2):
        raise ModelError(
            f"{model.manifest.model_id}: outputs {list(nowcast.shape)} and {list(band.shape)}, "
            "expected [1] and [1, 2]"
        )
    if not (np.isfinite(nowcast).all() and np.isfinite(band).all()):
        raise ModelError(f"{model.manifest.model_id}: non-finite nowcast on an empty panel")


def load_panel(db_path: Path) -> ReleasedPanel:
    """The panel stored in the agent's state database (creating its table on first use)."""
    panel = ReleasedPanel()
    try:
        with closing(sqlite3.connect(db_path, timeout=10.0)) as db:
            db.execute(_SCHEMA)
            db.commit()
            rows = db.execute(
                "SELECT series, period, value, released_at FROM macro_panel"
            ).fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the macro panel in {db_path}: {exc}") from exc
    for series, period, value, released_at in rows:
        if not math.isfinite(value):
            continue  # never written by this module; a hand-edited row is ignored
        panel._put(series, period, float(value), datetime.fromisoformat(released_at))
    logger.info("macro panel: %d released values, as of %s", len(panel), panel.as_of)
    return panel


def panel_write(release: MacroRelease) -> StateWrite:
    """Store `release` in the outbox transaction that publishes what it led to."""
    row = (
        release.series,
        release.period,
        float(release.value),
        _utc(release.released_at).isoformat(),
    )

    def write(cur: sqlite3.Cursor) -> None:
        cur.execute("INSERT OR REPLACE INTO macro_panel VALUES (?,?,?,?)", row)

    return write
