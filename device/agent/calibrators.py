"""The bar handler's calibration step: one `Calibrator` state per (symbol, price model), stacked
per model in a `CalibratorBank` and applied to a pass's outputs after inference, the states
committed in the outbox transaction of the bars.

A calibrator belongs to one model version (`<task>/<name>@<version>`): a swapped-in version, or
a rollback, starts a fresh one, since its errors are not the old model's (docs/CALIBRATION.md).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import numpy.typing as npt

from device.calibration import Calibrated, CalibrationSettings, Calibrator
from device.calibration_bank import CalibratorBank, PooledAccuracy
from device.errors import CalibrationStateError, ConfigError
from device.modelset import LoadedModel
from device.outbox import StateWrite
from device.schemas import LiveAccuracy
from device.settings import CalibrationSection

__all__ = ["SNAPSHOT_EVERY", "Calibrators", "calibration_ref", "live_accuracy", "load_calibration"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calibration (
    symbol TEXT NOT NULL,
    model TEXT NOT NULL,  -- <task>/<name>; the state's header names the version
    state BLOB NOT NULL,  -- Calibrator.to_bytes(): a snapshot
    PRIMARY KEY (symbol, model)
);
-- What each calibrator was fed since its snapshot, replayed on load: a bar costs one small row
-- instead of rewriting the whole ~6 KB state (docs/CALIBRATION.md, "Cost").
CREATE TABLE IF NOT EXISTS calibration_log (
    symbol TEXT NOT NULL,
    model TEXT NOT NULL,
    seq INTEGER NOT NULL,
    close REAL NOT NULL,
    raw BLOB  -- the model's [H, Q] output as little-endian float64; NULL: it failed on this bar
)
"""
# A calibrator's whole state is written every this many bars (its log cleared), else logged.
SNAPSHOT_EVERY = 64

Key = tuple[str, str]  # (symbol, model id)
IntArray = npt.NDArray[np.int64]


def calibration_ref(model: LoadedModel) -> str:
    """The version a calibration state belongs to."""
    return f"{model.model_id}@{model.ref.version}"


def load_calibration(db_path: Path) -> dict[Key, bytes]:
    """Every saved state in the agent's state database (creating the tables on first use):
    its snapshot with the bars logged since replayed, so exactly the state last committed."""
    try:
        with closing(sqlite3.connect(db_path, timeout=10.0)) as db:
            db.executescript(_SCHEMA)
            rows = db.execute("SELECT symbol, model, state FROM calibration").fetchall()
            log = db.execute(
                "SELECT symbol, model, seq, close, raw FROM calibration_log ORDER BY rowid"
            ).fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the calibration state in {db_path}: {exc}") from exc
    saved = {(symbol, model): bytes(state) for symbol, model, state in rows}
    bars: dict[Key, list[tuple[int, float, bytes | None]]] = {}
    for symbol, model, seq, close, raw in log:
        bars.setdefault((symbol, model), []).append((seq, close, raw))
    return {key: _replay(blob, bars.get(key, [])) for key, blob in saved.items()}


def _replay(blob: bytes, bars: list[tuple[int, float, bytes | None]]) -> bytes:
    """A snapshot with the logged bars applied as the bar path applied them."""
    if not bars:
        return blob
    try:
        cal = Calibrator.from_bytes(blob)
        for seq, close, raw in bars:
            cal.observe(seq, close)
            if raw is not None:
                cal.publish(seq, close, np.frombuffer(raw, "<f8").reshape(cal.theta.shape))
    except (CalibrationStateError, ValueError) as exc:
        logger.warning("calibration state and log not replayed: %s", exc)
        return b""  # resume() starts fresh: the snapshot alone is not the committed state
    return cal.to_bytes()


def live_accuracy(symbol: str, model: str, window: int, pooled: PooledAccuracy) -> LiveAccuracy:
    """The status entry of one calibrator (`model` its version): its accuracy pooled over
    horizons (`CalibratorBank.pooled_accuracy`), rounded for the heartbeat."""
    return LiveAccuracy(
        model=model,
        symbol=symbol,
        window=window,
        scored=pooled.scored,
        pinball=round(pooled.pinball, 7),
        coverage={name: round(share, 4) for name, share in pooled.coverage.items()},
    )


class Calibrators:
    """The calibration state of every (symbol, price model), one `CalibratorBank` per model (its
    served version). Network thread only.

    Per pass `apply` observes each bar's close (scoring the forecasts that end at it) and, where
    the model produced an output, corrects it: a few numpy calls per model and horizon for the
    whole pass. What changed goes to the next commit (`write()`): one small log row per bar, and
    the whole state of a calibrator that is new or has logged `SNAPSHOT_EVERY` bars since its
    last snapshot."""

    def __init__(self, settings: CalibrationSection, saved: dict[Key, bytes]) -> None:
        self.enabled = settings.enabled
        self.settings = CalibrationSettings(window=settings.window)
        self._saved = saved
        self._banks: dict[str, CalibratorBank] = {}  # model id -> its served version's states
        self._uncalibrated: set[str] = set()  # versions whose layout the calibrator refuses
        self._logged: dict[Key, int] = {}  # bars logged since the key's snapshot
        self._log: list[tuple[str, str, int, float, bytes | None]] = []
        self._snapshots: dict[Key, CalibratorBank] = {}

    def apply(
        self,
        model: LoadedModel,
        bars: Sequence[tuple[str, int, float]],
        outputs: Sequence[np.ndarray | None],
    ) -> list[Calibrated | None]:
        """For one model's bars of a pass ((symbol, seq, close), in arrival order) and its raw
        `[H, Q]` outputs (None: the model failed on that bar, only the scoring happens): the
        published correction of each bar, None where not calibrating."""
        bank = self._bank(model) if self.enabled and model.manifest.task == "price" else None
        published: list[Calibrated | None] = [None] * len(bars)
        if bank is None:
            return published
        rows = np.array([self._row(bank, model, symbol) for symbol, _, _ in bars], dtype=np.int64)
        for wave in _waves([symbol for symbol, _, _ in bars]):
            # each symbol at most once per call: its second bar must see its first one's update
            self._step(bank, wave, rows, bars, outputs, published)
        for (symbol, seq, close), output, out in zip(bars, outputs, published, strict=True):
            self._record(
                bank, (symbol, model.model_id), seq, close, None if out is None else output
            )
        return published

    def _step(
        self,
        bank: CalibratorBank,
        wave: list[int],
        rows: IntArray,
        bars: Sequence[tuple[str, int, float]],
        outputs: Sequence[np.ndarray | None],
        published: list[Calibrated | None],
    ) -> None:
        failed = [i for i in wave if outputs[i] is None]
        if failed:
            bank.observe(rows[failed], _seqs(bars, failed), [bars[i][2] for i in failed])
        done = np.array([i for i in wave if outputs[i] is not None], dtype=np.int64)
        seqs = _seqs(bars, done.tolist())
        # A bar the state has seen already (never in the agent: windows and states commit
        # together) is served uncorrected rather than scored twice.
        fresh = bank.fresh(rows[done], seqs)
        done, seqs = done[fresh].tolist(), seqs[fresh]
        if not done:
            return
        raw, correction, returns = bank.step(
            rows[done],
            seqs,
            [bars[i][2] for i in done],
            np.stack([outputs[i] for i in done]),
        )
        for k, i in enumerate(done):
            published[i] = Calibrated(raw[k].tolist(), correction[k].tolist(), returns[k].tolist())

    def _record(
        self, bank: CalibratorBank, key: Key, seq: int, close: float, output: np.ndarray | None
    ) -> None:
        """Log the bar for the next commit, or snapshot the calibrator if it is new here (no
        count yet) or has logged enough bars."""
        logged = self._logged[key] = self._logged.get(key, SNAPSHOT_EVERY - 1) + 1
        if logged >= SNAPSHOT_EVERY:
            self._snapshots[key] = bank
        else:
            raw = None if output is None else np.asarray(output, "<f8").tobytes()
            self._log.append((*key, seq, close, raw))

    @property
    def changed(self) -> bool:
        """Whether some state changed since the last commit stored them."""
        return bool(self._log or self._snapshots)

    def write(self) -> StateWrite:
        """The outbox write that stores every state changed since the last commit."""
        return self._flush

    def _flush(self, cur: sqlite3.Cursor) -> None:
        if not self.changed:
            return  # an earlier write of this transaction stored them
        snap = self._snapshots
        # a snapshot holds every bar before it: drop the key's older log rows and this batch's
        keys = [(s, m) for s, m in snap]
        cur.executemany("DELETE FROM calibration_log WHERE symbol = ? AND model = ?", keys)
        cur.executemany(
            "INSERT OR REPLACE INTO calibration VALUES (?,?,?)",
            [(s, m, bank.to_bytes(s)) for (s, m), bank in snap.items()],
        )
        cur.executemany(
            "INSERT INTO calibration_log VALUES (?,?,?,?,?)",
            [row for row in self._log if (row[0], row[1]) not in snap],
        )
        for key in snap:
            self._logged[key] = 0
        self._log.clear()
        self._snapshots = {}

    def state(self, symbol: str, model: LoadedModel) -> bytes | None:
        """The symbol's current calibration state for `model` (`Calibrator.to_bytes`), if any."""
        bank = self._banks.get(model.model_id)
        if bank is None or bank.model != calibration_ref(model) or symbol not in bank.rows:
            return None
        return bank.to_bytes(symbol)

    def accuracy(self, models: tuple[LoadedModel, ...]) -> list[LiveAccuracy]:
        """Live accuracy of the served versions, per model and symbol, for the status."""
        served = {calibration_ref(m) for m in models}
        return [
            live_accuracy(symbol, bank.model, self.settings.window, pooled)
            for _, bank in sorted(self._banks.items())
            if bank.model in served
            for symbol, pooled in sorted(bank.pooled_accuracy().items())
        ]

    def _bank(self, model: LoadedModel) -> CalibratorBank | None:
        """The bank of the model's served version; a new version (deploy or rollback) gets a
        new one, so every symbol starts fresh on it."""
        ref = calibration_ref(model)
        bank = self._banks.get(model.model_id)
        if bank is not None and bank.model == ref:
            return bank
        if ref in self._uncalibrated:
            return None
        m = model.manifest
        try:
            bank = CalibratorBank(
                ref, list(m.horizons or []), list(m.quantiles or []), self.settings
            )
        except CalibrationStateError as exc:  # e.g. more than 16 levels: served uncalibrated
            logger.warning("%s is not calibrated: %s", ref, exc)
            self._uncalibrated.add(ref)
            return None
        self._banks[model.model_id] = bank
        return bank

    def _row(self, bank: CalibratorBank, model: LoadedModel, symbol: str) -> int:
        row = bank.rows.get(symbol)
        if row is not None:
            return row
        key = (symbol, model.model_id)
        self._logged.pop(key, None)  # a new calibrator here: its first commit snapshots it
        # A saved state of another version is discarded here: the new version starts fresh.
        p = bank.proto
        cal = Calibrator.resume(
            self._saved.pop(key, None), bank.model, p.horizons, p.levels.tolist(), p.settings
        )
        return bank.add(symbol, cal)


def _waves(symbols: Sequence[str]) -> list[list[int]]:
    """Indices of `symbols` split into waves where each symbol occurs at most once, in order:
    wave k holds every symbol's (k+1)-th occurrence."""
    seen: Counter[str] = Counter()
    waves: list[list[int]] = []
    for i, symbol in enumerate(symbols):
        k = seen[symbol]
        seen[symbol] += 1
        if k == len(waves):
            waves.append([])
        waves[k].append(i)
    return waves


def _seqs(bars: Sequence[tuple[str, int, float]], index: list[int]) -> IntArray:
    return np.array([bars[i][1] for i in index], dtype=np.int64)
