"""On-line calibration of quantile forecasts: each (horizon, level) is corrected by quantile
tracking on the forecasts the agent published itself, scored when the close `h` bars later
arrives (Angelopoulos, Candes & Tibshirani 2023, "Conformal PID control", the P term; the
quantile form of adaptive conformal inference, Gibbs & Candes 2021). docs/CALIBRATION.md.

Published quantile = raw + theta[h, j] * spread[h], where spread is the raw forecast's own
outermost band (so one step size fits every asset and volatility regime), then sorted across
levels (rearrangement keeps quantiles non-crossing and never raises pinball loss). After a
forecast at level a is scored, theta += step * (a - 1{y <= published}): the long-run share of
outcomes below each published quantile converges to a whatever the series does, as long as the
normalised errors stay bounded. Per bar the work is O(len(horizons) * len(levels)).
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from device.errors import CalibrationStateError

__all__ = [
    "STATE_VERSION",
    "BandAccuracy",
    "Calibrated",
    "CalibrationSettings",
    "Calibrator",
    "HorizonAccuracy",
    "pinball",
]

logger = logging.getLogger(__name__)

STATE_VERSION = 1
# Below this raw spread (log-return units) a forecast is degenerate; keeps theta * spread finite.
_MIN_SPREAD = 1e-9

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CalibrationSettings:
    """`step`: quantile-tracking gain in units of the raw band's spread at horizon 1, divided by
    `h ** horizon_power` at horizon h (h overlapping targets share one path, so their errors come
    in runs of about h); chosen on the training series' validation periods, docs/CALIBRATION.md.
    `window`: scored forecasts per horizon kept for the live accuracy."""

    step: float = 0.02
    horizon_power: float = 0.25
    window: int = 250

    def __post_init__(self) -> None:
        if not 0.0 <= self.step < 1.0:
            raise CalibrationStateError(f"calibration step must lie in [0, 1), got {self.step}")
        if not 0.0 <= self.horizon_power <= 2.0:
            raise CalibrationStateError(
                f"horizon_power must lie in [0, 2], got {self.horizon_power}"
            )
        if self.window < 1:
            raise CalibrationStateError(f"accuracy window must be >= 1, got {self.window}")


@dataclass(frozen=True)
class Calibrated:
    """What a bar publishes: `returns` = `raw` + `correction`, each `[H, Q]` log returns."""

    raw: FloatArray
    correction: FloatArray
    returns: FloatArray


@dataclass(frozen=True)
class BandAccuracy:
    """Share of the last `scored` outcomes inside the published [lower, upper] quantiles."""

    lower: float
    upper: float
    covered: float

    @property
    def nominal(self) -> float:
        return self.upper - self.lower


@dataclass(frozen=True)
class HorizonAccuracy:
    """Live accuracy of one horizon over its last `scored` (<= window) scored forecasts."""

    horizon: int
    scored: int
    pinball: float
    below: tuple[float, ...]  # share of outcomes at or below each published level
    bands: tuple[BandAccuracy, ...]


def pinball(y: FloatArray, q: FloatArray, levels: FloatArray) -> FloatArray:
    """Pinball loss of quantiles `q [..., Q]` at `levels [Q]` for outcomes `y [...]`."""
    diff = y[..., None] - q
    loss: FloatArray = np.maximum(levels * diff, (levels - 1.0) * diff)
    return loss


def _bands(levels: FloatArray) -> list[tuple[int, int]]:
    """Index pairs (lower, upper) of the symmetric central bands the levels contain."""
    pairs = []
    for i, a in enumerate(levels):
        match = np.flatnonzero(np.isclose(levels, 1.0 - a))
        if a < 0.5 and match.size:
            pairs.append((i, int(match[0])))
    return pairs


def _encode(array: npt.NDArray[Any]) -> dict[str, Any]:
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
    return {
        "dtype": data.dtype.str,
        "shape": list(data.shape),
        "data": base64.b64encode(data.tobytes()).decode(),
    }


def _decode(blob: dict[str, Any], dtype: str, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    if blob.get("dtype") != dtype or tuple(blob.get("shape", ())) != shape:
        raise CalibrationStateError(
            f"calibration array is {blob.get('dtype')} {blob.get('shape')}, "
            f"expected {dtype} {list(shape)}"
        )
    raw = base64.b64decode(blob["data"], validate=True)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


class Calibrator:
    """Calibration state of one (symbol, model): per bar call `observe(seq, close)` first (scores
    the forecasts whose horizon ends at this close), then `publish(seq, close, raw)`."""

    def __init__(
        self,
        model: str,
        horizons: list[int],
        levels: list[float],
        settings: CalibrationSettings | None = None,
    ) -> None:
        if not horizons or min(horizons) < 1 or len(set(horizons)) != len(horizons):
            raise CalibrationStateError(f"horizons must be distinct and >= 1, got {horizons}")
        lv = np.asarray(levels, dtype=np.float64)
        if lv.size < 2 or not ((lv > 0) & (lv < 1)).all() or (np.diff(lv) <= 0).any():
            raise CalibrationStateError(f"levels must increase inside (0, 1), got {levels}")
        self.model = model
        self.horizons = [int(h) for h in horizons]
        self.levels = lv
        self.settings = settings or CalibrationSettings()
        n_h, n_q, depth = len(horizons), lv.size, max(horizons)
        self.last_seq: int | None = None
        self.theta = np.zeros((n_h, n_q))
        # pending forecasts: slot seq % depth holds the one published at bar `origin[slot]`
        self.origin = np.full(depth, -1, dtype=np.int64)
        self.origin_log_close = np.zeros(depth)
        # float32, like the model output: halves the state; scoring uses these same values
        self.published = np.zeros((depth, n_h, n_q), dtype=np.float32)
        # live accuracy rings, one row per scored forecast and horizon
        w = self.settings.window
        self.scored = np.zeros(n_h, dtype=np.int64)
        self.below = np.zeros((w, n_h, n_q), dtype=np.bool_)
        self.loss = np.zeros((w, n_h), dtype=np.float32)
        self._band_pairs = _bands(lv)
        h = np.asarray(self.horizons, dtype=np.float64)
        self._steps = self.settings.step / h**self.settings.horizon_power

    # -- per bar ---------------------------------------------------------------------------

    def observe(self, seq: int, close: float) -> int:
        """Score every pending forecast whose target is this bar and update the corrections;
        returns how many horizons were scored. A bar at or before the last one is ignored."""
        if self.last_seq is not None and seq <= self.last_seq:
            return 0
        if not (np.isfinite(close) and close > 0):
            raise CalibrationStateError(f"close must be a positive number, got {close}")
        self.last_seq = seq
        log_close = float(np.log(close))
        depth = self.origin.size
        n = 0
        for j, h in enumerate(self.horizons):
            slot = (seq - h) % depth
            if self.origin[slot] != seq - h:
                continue  # nothing was published h bars ago (gap, model error, fresh state)
            y = log_close - self.origin_log_close[slot]
            self._score(j, y, self.published[slot, j].astype(np.float64))
            n += 1
        return n

    def _score(self, j: int, y: float, q: FloatArray) -> None:
        hit = y <= q
        self.theta[j] += self._steps[j] * (self.levels - hit)
        row = int(self.scored[j] % self.settings.window)
        self.below[row, j] = hit
        self.loss[row, j] = float(pinball(np.asarray(y), q, self.levels).mean())
        self.scored[j] += 1

    def correct(self, raw: FloatArray) -> Calibrated:
        """The published quantiles for a raw `[H, Q]` model output; changes no state."""
        r = np.asarray(raw, dtype=np.float64)
        if r.shape != self.theta.shape or not np.isfinite(r).all():
            raise CalibrationStateError(
                f"raw forecast must be finite {list(self.theta.shape)}, got {list(r.shape)}"
            )
        spread = np.maximum(r[:, -1] - r[:, 0], _MIN_SPREAD)
        out = np.sort(r + self.theta * spread[:, None], axis=1)
        return Calibrated(raw=r, correction=out - r, returns=out)

    def publish(self, seq: int, close: float, raw: FloatArray) -> Calibrated:
        """Correct the raw output of bar `seq` and remember it until its targets arrive."""
        result = self.correct(raw)
        if self.last_seq is None or seq != self.last_seq:
            raise CalibrationStateError(f"publish bar {seq} without observing it first")
        slot = seq % self.origin.size
        self.origin[slot] = seq
        self.origin_log_close[slot] = float(np.log(close))
        self.published[slot] = result.returns
        return result

    # -- status ----------------------------------------------------------------------------

    def accuracy(self) -> list[HorizonAccuracy]:
        """Rolling pinball loss, share below each level and band coverage per horizon."""
        out = []
        for j, h in enumerate(self.horizons):
            n = int(min(self.scored[j], self.settings.window))
            below = self.below[:n, j]
            bands = tuple(
                BandAccuracy(
                    float(self.levels[lo]),
                    float(self.levels[hi]),
                    float((below[:, hi] & ~below[:, lo]).mean()) if n else float("nan"),
                )
                for lo, hi in self._band_pairs
            )
            out.append(
                HorizonAccuracy(
                    horizon=h,
                    scored=n,
                    pinball=float(self.loss[:n, j].mean()) if n else float("nan"),
                    below=tuple(below.mean(axis=0).tolist()) if n else (),
                    bands=bands,
                )
            )
        return out

    # -- state -----------------------------------------------------------------------------

    def to_json(self) -> str:
        """The whole state as JSON (arrays as little-endian base64: restores bit for bit)."""
        return json.dumps(
            {
                "version": STATE_VERSION,
                "model": self.model,
                "horizons": self.horizons,
                "levels": self.levels.tolist(),
                "settings": asdict(self.settings),
                "last_seq": self.last_seq,
                "theta": _encode(self.theta),
                "origin": _encode(self.origin),
                "origin_log_close": _encode(self.origin_log_close),
                "published": _encode(self.published),
                "scored": _encode(self.scored),
                "below": _encode(np.packbits(self.below, axis=None)),
                "loss": _encode(self.loss),
            },
            separators=(",", ":"),
        )

    def to_bytes(self) -> bytes:
        return self.to_json().encode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Calibrator:
        """Rebuild a state saved by `to_json`; a malformed one raises CalibrationStateError."""
        try:
            doc = json.loads(text)
            if doc.get("version") != STATE_VERSION:
                raise CalibrationStateError(f"calibration state version {doc.get('version')}")
            cal = cls(
                doc["model"],
                doc["horizons"],
                doc["levels"],
                CalibrationSettings(**doc["settings"]),
            )
            cal._load_arrays(doc)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CalibrationStateError(f"unreadable calibration state: {exc}") from exc
        return cal

    def _load_arrays(self, doc: dict[str, Any]) -> None:
        self.last_seq = None if doc["last_seq"] is None else int(doc["last_seq"])
        for name in ("theta", "origin", "origin_log_close", "published", "scored", "loss"):
            current = getattr(self, name)
            setattr(self, name, _decode(doc[name], current.dtype.str, current.shape))
        packed_len = (self.below.size + 7) // 8
        bits = _decode(doc["below"], "|u1", (packed_len,))
        unpacked = np.unpackbits(bits, count=self.below.size).astype(np.bool_)
        self.below = unpacked.reshape(self.below.shape)

    @classmethod
    def resume(
        cls,
        saved: str | bytes | None,
        model: str,
        horizons: list[int],
        levels: list[float],
        settings: CalibrationSettings | None = None,
    ) -> Calibrator:
        """The saved state if it belongs to this model version and layout, else a fresh one
        (a new model version starts fresh: its errors are not the old model's)."""
        fresh = cls(model, horizons, levels, settings)
        if saved is None:
            return fresh
        try:
            cal = cls.from_json(saved)
        except CalibrationStateError as exc:
            logger.warning("calibration state of %s discarded: %s", model, exc)
            return fresh
        same_layout = cal.horizons == fresh.horizons and np.array_equal(cal.levels, fresh.levels)
        if cal.model != model or not same_layout or cal.settings != fresh.settings:
            return fresh
        return cal
