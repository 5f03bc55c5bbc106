"""The calibration states of one model version on many symbols, stacked, so that the bars of one
pass of the network loop are scored and corrected in a few numpy calls per horizon instead of one
Python loop per symbol (that loop costs ~40 µs a bar; stacked, ~9 µs a bar in a pass of 64 on
a loaded 2-core machine: docs/CALIBRATION.md, "Stacked states").

Each row is byte for byte a `Calibrator` state buffer and every step does the `Calibrator`'s
arithmetic in the same order (elementwise float64, float32 roundings, left-to-right sums), so a
row's `to_bytes` and every published value equal what a `Calibrator` fed the same bars gives; the
agent restores and replays states with `Calibrator` (tests/device/test_calibration_bank.py checks
both against each other bit for bit)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from device import garch
from device.calibration import (
    _MAX_SCALE,
    _MIN_SCALE,
    _MIN_SPREAD,
    _NO_SEQ,
    Calibrated,
    CalibrationSettings,
    Calibrator,
    _layout,
    _state_buffer,
)
from device.errors import CalibrationStateError

__all__ = ["CalibratorBank", "PooledAccuracy"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _offsets(cal: Calibrator) -> dict[str, tuple[int, np.dtype[Any], tuple[int, ...]]]:
    """Where each of a Calibrator's state arrays lies in its byte buffer (the bank's row), by
    the name `_layout` gives it."""
    n_h, n_q = cal.theta.shape
    buf, views = _state_buffer(
        _layout(n_h, n_q, cal.origin.size, cal.settings.window, cal._garch_grid)
    )
    if buf.size != cal._buf.size:
        raise CalibrationStateError("the calibrator's layout is not its buffer's")
    base = buf.ctypes.data
    return {name: (v.ctypes.data - base, v.dtype, v.shape) for name, v in views.items()}


# From this many rows a step runs as numpy calls on the stacked rows; below it, row by row in a
# Calibrator's plain-float code (each numpy call costs ~2-5 µs here, whatever its size: ~40 of
# them per step are slower than the per-row loop for a handful of rows; docs/BENCHMARKS.md).
VECTOR_FROM = 8


class PooledAccuracy(NamedTuple):
    """One row's live accuracy over all horizons: forecasts scored, mean pinball loss, and the
    share of outcomes inside each central band (keyed by its nominal coverage in percent)."""

    scored: int
    pinball: float
    coverage: dict[str, float]


class CalibratorBank:
    """Rows of `Calibrator` states that share a model version, horizons, levels and settings.
    `step` observes and publishes one bar for each of several distinct rows at once."""

    def __init__(
        self,
        model: str,
        horizons: list[int],
        levels: list[float],
        settings: CalibrationSettings | None = None,
        vector_from: int = VECTOR_FROM,
    ) -> None:
        # Validates the layout and holds its constants; its buffer is the per-row path's working
        # copy (a row is copied in, stepped, copied back), so its own state means nothing.
        self.proto = Calibrator(model, horizons, levels, settings)
        self.vector_from = vector_from
        self.model = model
        p = self.proto
        self._fields = _offsets(p)
        self._width = p._buf.size
        self._levels = p.levels
        self._mean_q = 1.0 / p.levels.size
        self._bits = p._bits.astype(np.int64)
        self._increments = [(np.array(a), np.array(b)) for a, b in p._increments]
        self._window = p.settings.window
        self._depth = p.origin.size
        self._data = np.zeros((0, self._width), dtype=np.uint8)
        self._views: dict[str, npt.NDArray[Any]] = {}
        self.rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, key: str, cal: Calibrator) -> int:
        """A row for `key` holding `cal`'s state (a resumed or fresh Calibrator of this layout)."""
        if cal.model != self.model or cal._buf.size != self._width:
            raise CalibrationStateError(f"a state of {cal.model} does not fit {self.model}'s bank")
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = len(self.rows)
            if row == len(self._data):  # grow by doubling: adding stays O(1) amortized
                grown = np.zeros((max(8, 2 * row), self._width), dtype=np.uint8)
                grown[:row] = self._data
                self._data = grown
                self._views = {
                    name: self._data[:, off : off + dt.itemsize * int(np.prod(shape))]
                    .view(dt)
                    .reshape(len(self._data), *shape)
                    for name, (off, dt, shape) in self._fields.items()
                }
        self._data[row] = cal._buf
        return row

    def to_bytes(self, key: str) -> bytes:
        """The row's state as `Calibrator.to_bytes` writes it."""
        head = self.proto._header.encode()
        state: bytes = self._data[self.rows[key]].tobytes()
        return len(head).to_bytes(4, "little") + head + state

    def pooled_accuracy(self) -> dict[str, PooledAccuracy]:
        """Every row's live accuracy pooled over horizons (each horizon weighted by its scored
        forecasts, as `device.agent.calibrators.live_accuracy` pools `accuracy`), in a few numpy
        calls for all rows: the status heartbeat, whose per-row path cost ~0.2 ms a symbol on the
        network thread (~100 ms for 500). Rows with nothing scored yet are left out."""
        rows = len(self.rows)
        v, window = self._views, self._window
        n = np.minimum(v["scored"][:rows], window)  # [R, H] scored forecasts in each ring
        scored = n.sum(axis=1)
        valid = np.arange(window)[None, :, None] < n[:, None, :]  # [R, W, H]
        loss = np.where(valid, v["loss"][:rows], 0.0).sum(axis=(1, 2), dtype=np.float64)
        below = v["below"][:rows].astype(np.int64)
        coverage = {}
        for lo, hi in self.proto._band_pairs:
            inside = ((below >> hi) & 1) & ~((below >> lo) & 1) & valid
            name = f"{round((self._levels[hi] - self._levels[lo]) * 100):d}"
            coverage[name] = inside.sum(axis=(1, 2))
        bands = dict(sorted(coverage.items()))  # by name, as the status lists them
        out = {}
        for key, row in self.rows.items():
            total = int(scored[row])
            if total:
                share = {name: float(c[row]) / total for name, c in bands.items()}
                out[key] = PooledAccuracy(total, float(loss[row]) / total, share)
        return out

    def step(
        self, rows: IntArray, seqs: IntArray, closes: Sequence[float], raw: npt.NDArray[Any]
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """For distinct `rows`, each with its bar `seqs` (above the row's last one) and close:
        score what ends at the bar, then correct its raw `[B, H, Q]` output. Returns (raw,
        correction, published) as float64 `[B, H, Q]`."""
        if raw.shape != (len(rows), *self.proto.theta.shape):
            raise CalibrationStateError(f"raw forecasts must be [B, H, Q], got {raw.shape}")
        if not self.fresh(rows, seqs).all():
            raise CalibrationStateError("a bar at or before the last observed one")
        if len(rows) < self.vector_from:
            return self._step_rows(rows, seqs, closes, raw)
        log_close = np.array([math.log(c) for c in closes], dtype=np.float64)
        self._observe(rows, seqs, log_close)
        return self._publish(rows, seqs, log_close, raw)

    def fresh(self, rows: IntArray, seqs: IntArray) -> npt.NDArray[np.bool_]:
        """Which bars lie after their row's last observed one (the only ones `step` takes)."""
        fresh: npt.NDArray[np.bool_] = seqs > self._views["_seq"][rows, 0]
        return fresh

    def observe(self, rows: IntArray, seqs: IntArray, closes: Sequence[float]) -> None:
        """Only the scoring (the model failed on these bars); rows whose seq is not above their
        last one are skipped, as `Calibrator.observe` skips them."""
        if len(rows) < self.vector_from:
            for row, seq, close in zip(rows.tolist(), seqs.tolist(), closes, strict=True):
                self._on_row(row, seq, close, None)
            return
        new = self.fresh(rows, seqs)
        log_close = np.array([math.log(c) for c in closes], dtype=np.float64)
        self._observe(rows[new], seqs[new], log_close[new])

    def _on_row(
        self, row: int, seq: int, close: float, raw: npt.NDArray[Any] | None
    ) -> Calibrated | None:
        """One bar of one row in a Calibrator's own code: the row is copied into the prototype's
        buffer, observed (and published when `raw` is given), copied back."""
        cal = self.proto
        cal._buf[:] = self._data[row]
        try:
            cal.observe(seq, close)
            return None if raw is None else cal.publish(seq, close, raw)
        finally:
            self._data[row] = cal._buf

    def _step_rows(
        self, rows: IntArray, seqs: IntArray, closes: Sequence[float], raw: npt.NDArray[Any]
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        bars = zip(rows.tolist(), seqs.tolist(), closes, raw, strict=True)
        done = [self._on_row(row, seq, close, out) for row, seq, close, out in bars]
        return (
            np.array([d.raw_rows for d in done if d is not None]),
            np.array([d.correction_rows for d in done if d is not None]),
            np.array([d.returns_rows for d in done if d is not None]),
        )

    def _observe(self, rows: IntArray, seqs: IntArray, log_close: FloatArray) -> None:
        v = self._views
        if self.proto._blending:
            self._update_vol(rows, seqs, log_close)
        if self.proto._mixing:
            self._update_garch(rows, seqs, log_close)
        v["_seq"][rows, 0] = seqs
        for j, h in enumerate(self.proto.horizons):
            slots = (seqs - h) % self._depth
            due = v["origin"][rows, slots] == seqs - h
            if due.any():
                self._score(j, rows[due], slots[due], log_close[due])

    def _update_vol(self, rows: IntArray, seqs: IntArray, log_close: FloatArray) -> None:
        """`Calibrator._update_vol` on many rows (a row not started yet keeps only the close)."""
        vol, p = self._views["vol"], self.proto
        last = self._views["_seq"][rows, 0]
        ready = (vol[rows, 3] != 0.0) & (last != _NO_SEQ)
        if ready.any():
            at, seq, gap_from = rows[ready], seqs[ready], last[ready]
            r = log_close[ready] - vol[at, 0]
            r2 = r * r / (seq - gap_from)
            var = vol[at, 2] + (r2 - vol[at, 2]) * p._vol_keep
            conf = p.settings
            vol[at, 1] = p._vol_omega * var + conf.vol_alpha * r2 + conf.vol_beta * vol[at, 1]
            vol[at, 2] = var
        vol[rows, 0] = log_close

    def _update_garch(self, rows: IntArray, seqs: IntArray, log_close: FloatArray) -> None:
        """`Calibrator._update_garch` on many rows (a row's first bar keeps only the close)."""
        v = self._views
        stats = v["garch"]
        last = stats[rows, garch.LAST]
        seen = ~np.isnan(last)
        if seen.any():
            at = rows[seen]
            s, s2, ll = stats[at], v["garch_s2"][at], v["garch_ll"][at]
            gap = (seqs[seen] - v["_seq"][at, 0]).astype(np.float64)
            garch.update(s, s2, ll, log_close[seen] - last[seen], gap, self.proto._garch_k)
            stats[at], v["garch_s2"][at], v["garch_ll"][at] = s, s2, ll
        stats[rows, garch.LAST] = log_close

    def _mixed(self, rows: IntArray, raw64: FloatArray) -> FloatArray:
        """`Calibrator._mixed` on many rows: the mix where a row's fit is ready."""
        v, p = self._views, self.proto
        stats = v["garch"][rows]
        ok = garch.ready(stats, p._garch_k)
        if not ok.any():
            return raw64
        fit = garch.quantiles(
            stats[ok], v["garch_s2"][rows[ok]], v["garch_ll"][rows[ok]], p._garch_terms
        )
        w = p.settings.mix
        mixed = raw64.copy()
        mixed[ok] = (1.0 - w) * raw64[ok] + w * fit
        return mixed

    def _blended(self, rows: IntArray, raw64: FloatArray) -> FloatArray:
        """`Calibrator._blended` on many rows: the raw bands pulled toward the long-memory
        variance's widths (a row's first forecast starts its variance)."""
        vol, p = self._views["vol"], self.proto
        new = vol[rows, 3] == 0.0
        if new.any():
            first = raw64[new, p._h_first]
            sd = np.maximum(first[:, -1] - first[:, 0], _MIN_SPREAD) / p._z_spread
            vol[rows[new], 1] = vol[rows[new], 2] = sd * sd / p.horizons[p._h_first]
            vol[rows[new], 3] = 1.0
        s2, var = vol[rows, 1][:, None], vol[rows, 2][:, None]
        h, b = (np.array(t) for t in zip(*p._vol_terms, strict=True))
        spread = np.maximum(raw64[..., -1] - raw64[..., 0], _MIN_SPREAD)
        ratio = np.sqrt(h * var + b * (s2 - var)) * p._z_spread / spread
        k = p.settings.blend * (ratio - 1.0)
        c0, c1 = p._centre
        centre = 0.5 * (raw64[..., c0] + raw64[..., c1])
        blended: FloatArray = raw64 + k[..., None] * (raw64 - centre[..., None])
        return blended

    def _score(self, j: int, rows: IntArray, slots: IntArray, log_close: FloatArray) -> None:
        """`Calibrator._score` on many rows: the shifts and band scales, the dead band's gauges,
        then the live accuracy rings."""
        v, p, levels = self._views, self.proto, self._levels
        y = (log_close - v["origin_log_close"][rows, slots])[:, None]
        q = v["pending"][rows, slots, j].astype(np.float64)
        hits = y <= q  # each level scored on its own iterate
        if p._step_list[j]:
            on_hit, on_miss = self._increments[j]
            v["theta"][rows, j] += np.where(hits, on_hit, on_miss)
        if p._scaled:
            scale = v["scale"]
            for lo, hi, up, down in p._factors[j]:
                miss = hits[:, lo] | ~hits[:, hi]
                m = scale[rows, j, lo] * np.where(miss, up, down)
                scale[rows, j, lo] = scale[rows, j, hi] = np.clip(m, _MIN_SCALE, _MAX_SCALE)
        published = np.sort(q, axis=1)
        if p._gating:
            raw = v["pending_raw"][rows, slots, j].astype(np.float64)
            cover = v["cover"]
            for lo, hi, _ in p._gate_bands:
                c = cover[rows, j, lo]
                c += (((raw[:, lo, None] < y) & (y <= raw[:, hi, None]))[:, 0] - c) / p._gate_n
                cover[rows, j, lo] = cover[rows, j, hi] = c
            gated = v["gated"][rows, slots, j].astype(bool)[:, None]
            published = np.where(gated, raw, published)
        hit = y <= published
        terms = (levels - hit) * (y - published) * self._mean_q
        loss = np.zeros(len(rows))
        for i in range(terms.shape[1]):  # left to right, as the Calibrator sums
            loss += terms[:, i]
        ring = v["scored"][rows, j] % self._window
        v["loss"][rows, ring, j] = loss
        v["below"][rows, ring, j] = (hit * self._bits).sum(axis=1)
        v["scored"][rows, j] += 1

    def _publish(
        self, rows: IntArray, seqs: IntArray, log_close: FloatArray, raw: npt.NDArray[Any]
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        v = self._views
        slots = seqs % self._depth
        v["origin"][rows, slots] = seqs
        v["origin_log_close"][rows, slots] = log_close
        raw64 = raw.astype(np.float64)
        # what the calibration corrects: the raw output, mixed with the GARCH fit's, blended
        base = self._mixed(rows, raw64) if self.proto._mixing else raw64
        if self.proto._blending:
            base = self._blended(rows, base)
        spread = np.maximum(base[..., -1] - base[..., 0], _MIN_SPREAD)[..., None]
        shift = v["theta"][rows] * spread
        if self.proto._scaled:  # c + m * (raw - c) + theta * spread, as the Calibrator writes it
            c0, c1 = self.proto._centre
            centre = (0.5 * (base[..., c0] + base[..., c1]))[..., None]
            iterates = base + (v["scale"][rows] - 1.0) * (base - centre) + shift
        else:
            iterates = base + shift
        v["pending"][rows, slots] = iterates.astype(np.float32)
        published = np.sort(iterates, axis=-1)
        if self.proto._gating:  # the dead band: the raw output, sorted, where every gauge is in
            ordered = np.sort(base, axis=-1)
            cover, width = v["cover"][rows], self.proto._gate_width
            gates = np.ones(cover.shape[:2], dtype=bool)
            for lo, _, nominal in self.proto._gate_bands:
                gates &= np.abs(cover[:, :, lo] - nominal) <= width
            v["pending_raw"][rows, slots] = ordered.astype(np.float32)
            v["gated"][rows, slots] = gates
            published = np.where(gates[..., None], ordered, published)
        return raw64, published - raw64, published
