"""The bar handler's calibration step: one `Calibrator` per (symbol, price model), applied to the
model's output after inference, its state committed in the outbox transaction of the bar.

A calibrator belongs to one model version (`<task>/<name>@<version>`): a swapped-in version, or
a rollback, starts a fresh one, since its errors are not the old model's (docs/CALIBRATION.md).
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np

from device.calibration import Calibrated, CalibrationSettings, Calibrator, HorizonAccuracy
from device.errors import CalibrationStateError, ConfigError
from device.modelset import LoadedModel
from device.outbox import StateWrite
from device.schemas import LiveAccuracy
from device.settings import CalibrationSection

__all__ = ["Calibrators", "calibration_ref", "live_accuracy", "load_calibration"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calibration (
    symbol TEXT NOT NULL,
    model TEXT NOT NULL,  -- <task>/<name>; the state's header names the version
    state BLOB NOT NULL,  -- Calibrator.to_bytes()
    PRIMARY KEY (symbol, model)
)
"""

Key = tuple[str, str]  # (symbol, model id)


def calibration_ref(model: LoadedModel) -> str:
    """The version a calibration state belongs to."""
    return f"{model.model_id}@{model.ref.version}"


def load_calibration(db_path: Path) -> dict[Key, bytes]:
    """Every saved state in the agent's state database (creating the table on first use)."""
    try:
        with closing(sqlite3.connect(db_path, timeout=10.0)) as db:
            db.execute(_SCHEMA)
            db.commit()
            rows = db.execute("SELECT symbol, model, state FROM calibration").fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the calibration state in {db_path}: {exc}") from exc
    return {(symbol, model): bytes(state) for symbol, model, state in rows}


def live_accuracy(symbol: str, cal: Calibrator) -> LiveAccuracy | None:
    """The status entry of one calibrator: pooled over horizons, weighted by scored forecasts;
    None before its first scored forecast."""
    horizons: list[HorizonAccuracy] = [a for a in cal.accuracy() if a.scored]
    n = sum(a.scored for a in horizons)
    if not n:
        return None
    coverage: dict[str, float] = {}
    for a in horizons:
        for band in a.bands:
            name = f"{round(band.nominal * 100):d}"
            coverage[name] = coverage.get(name, 0.0) + band.covered * a.scored / n
    return LiveAccuracy(
        model=cal.model,
        symbol=symbol,
        window=cal.settings.window,
        scored=n,
        pinball=round(sum(a.pinball * a.scored for a in horizons) / n, 7),
        coverage={k: round(v, 4) for k, v in sorted(coverage.items())},
    )


class Calibrators:
    """The calibration state of every (symbol, price model). Network thread only.

    Per bar `apply` observes the close (scoring the forecasts that end at this bar) and, when the
    model produced an output, corrects it. The states it changed are serialised once per commit,
    by the `StateWrite` from `write()`, so a batch of bars costs one `to_bytes` per state."""

    def __init__(self, settings: CalibrationSection, saved: dict[Key, bytes]) -> None:
        self.enabled = settings.enabled
        self.settings = CalibrationSettings(window=settings.window)
        self._saved = saved
        self._cals: dict[Key, Calibrator] = {}
        self._uncalibrated: set[str] = set()  # versions whose layout the calibrator refuses
        self._dirty: dict[Key, Calibrator] = {}

    def apply(
        self,
        model: LoadedModel,
        symbol: str,
        seq: int,
        close: float,
        output: np.ndarray | None,
    ) -> Calibrated | None:
        """Score what ended at bar `seq` and correct this bar's raw `[H, Q]` output (None: the
        model failed on this bar, only the scoring happens). None when not calibrating."""
        cal = self._calibrator(model, symbol)
        if cal is None:
            return None
        cal.observe(seq, close)
        self._dirty[(symbol, model.model_id)] = cal
        return None if output is None else cal.publish(seq, close, output)

    @property
    def changed(self) -> bool:
        """Whether some state changed since the last commit stored them."""
        return bool(self._dirty)

    def write(self) -> StateWrite:
        """The outbox write that stores every state changed since the last commit."""
        return self._flush

    def _flush(self, cur: sqlite3.Cursor) -> None:
        if not self._dirty:
            return  # an earlier write of this transaction stored them
        rows = [(s, m, cal.to_bytes()) for (s, m), cal in self._dirty.items()]
        cur.executemany("INSERT OR REPLACE INTO calibration VALUES (?,?,?)", rows)
        self._dirty.clear()

    def accuracy(self, models: tuple[LoadedModel, ...]) -> list[LiveAccuracy]:
        """Live accuracy of the served versions, per model and symbol, for the status."""
        served = {calibration_ref(m) for m in models}
        found = (
            live_accuracy(symbol, cal)
            for (symbol, _), cal in sorted(self._cals.items())
            if cal.model in served
        )
        return [a for a in found if a is not None]

    def _calibrator(self, model: LoadedModel, symbol: str) -> Calibrator | None:
        if not self.enabled or model.manifest.task != "price":
            return None
        key, ref = (symbol, model.model_id), calibration_ref(model)
        cal = self._cals.get(key)
        if cal is not None and cal.model == ref:
            return cal
        if ref in self._uncalibrated:
            return None
        m = model.manifest
        try:
            # A saved state of another version is discarded here: the new version starts fresh.
            cal = self._cals[key] = Calibrator.resume(
                self._saved.pop(key, None),
                ref,
                list(m.horizons or []),
                list(m.quantiles or []),
                self.settings,
            )
        except CalibrationStateError as exc:  # e.g. more than 16 levels: served uncalibrated
            logger.warning("%s is not calibrated: %s", ref, exc)
            self._uncalibrated.add(ref)
            return None
        return cal
