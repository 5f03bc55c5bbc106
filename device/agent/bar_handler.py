"""The agent's own handler: `market/<symbol>/bar` in, a price or trend forecast per window model
out. It keeps each symbol's window of closes (restored from the outbox at start), skips the
symbols another member of its pool owns (device/partition.py), runs the windows of one pass of
the network loop as one onnxruntime call per model (`infer_rows`) and, through `Calibrators`,
corrects each price forecast after inference (its state in the same transaction)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

import numpy as np
import paho.mqtt.client as mqtt

from device.agent.calibrators import Calibrators
from device.agent.host import Outcome
from device.bars import SeqCheck, SymbolWindow, check_seq, parse_bar
from device.calibration import Calibrated
from device.errors import ModelError, PayloadError
from device.forecasts import Levels, price_forecast, price_levels, trend_forecast
from device.health import LatencyWindow
from device.modelset import LoadedModel, ModelSet
from device.outbox import OutMessage, StateWrite, WindowState
from device.schemas import PriceForecast, TrendForecast
from device.settings import AgentSettings
from device.topics import Topics

__all__ = ["BarHandler"]

logger = logging.getLogger(__name__)


class PendingRow(NamedTuple):
    """One forecast to compute: a model and a copy of the window it reads. (A named tuple: one
    is built per bar and model, and a frozen dataclass costs ~3 µs more to build.)"""

    model: LoadedModel
    symbol: str
    seq: int
    ts: datetime
    last_close: float
    closes: np.ndarray  # [1, window] float32
    seq_gap: bool


# A row's inference: its `[1, ...]` output and the latency of the call, or why it failed.
Result = tuple[np.ndarray, float] | ModelError


def infer_rows(model: LoadedModel, rows: Sequence[PendingRow]) -> list[Result]:
    """Each row's `[1, ...]` output and the latency of the call that computed it: one call for
    all rows when the graph is per-row (`OnnxModel.batchable`), else one call per row. A failed
    batched call is retried row by row, so only the windows that fail get an error; so does a
    row whose output is not finite (checked once per call, not per row)."""
    if model.model.batchable and len(rows) > 1:
        try:
            out, latency_ms = model.model.run_window(np.concatenate([r.closes for r in rows]))
        except ModelError:
            pass
        else:
            return _split(model, out, latency_ms)
    results: list[Result] = []
    for row in rows:
        try:
            out, latency_ms = model.model.run_window(row.closes)
        except ModelError as exc:
            results.append(exc)
        else:
            results.extend(_split(model, out, latency_ms))
    return results


def _split(model: LoadedModel, out: np.ndarray, latency_ms: float) -> list[Result]:
    """The rows of one call's output, a ModelError for each row with NaN or inf (never published,
    never scored by the calibration)."""
    finite = np.isfinite(out.reshape(len(out), -1)).all(axis=1).tolist()
    return [
        (out[i : i + 1], latency_ms)
        if ok
        else ModelError(f"{model.model_id} produced non-finite values for this window")
        for i, ok in enumerate(finite)
    ]


def _levels(
    rows: Sequence[PendingRow], outputs: Sequence[Result], calibrated: Sequence[Calibrated | None]
) -> list[Levels | ModelError | None]:
    """For a price model's rows, each forecast's published quantiles (calibrated, else the raw
    output) and price levels, computed for all of them at once; None for a trend model's rows
    and for failed ones."""
    model = rows[0].model
    levels: list[Levels | ModelError | None] = [None] * len(rows)
    ran = [(i, o[0][0]) for i, o in enumerate(outputs) if not isinstance(o, ModelError)]
    if model.manifest.task != "price" or not ran:
        return levels
    published = [raw if (c := calibrated[i]) is None else c for i, raw in ran]
    found = price_levels(model, [rows[i].last_close for i, _ in ran], published)
    for (i, _), level in zip(ran, found, strict=True):
        levels[i] = level
    return levels


# A failed FleetEvent for a model: (kind, detail, model) -> message on the events topic.
EventFn = Callable[[str, str, LoadedModel | None], OutMessage]


class BarHandler:
    """Windows per symbol and the forecasts each new bar leads to. Network thread only."""

    def __init__(
        self,
        settings: AgentSettings,
        models: Callable[[], ModelSet],
        saved: Iterable[WindowState],
        counters: Counter[str],
        inference_ms: LatencyWindow,
        event: EventFn,
        calibrators: Calibrators,
    ) -> None:
        self.agent_id = settings.agent_id
        self.topics = Topics(settings.topic_prefix)
        self.max_symbols = settings.max_symbols
        self.accepted = frozenset(settings.symbols) or None
        self.partition = settings.partition.partition()
        self._models = models
        self._counters = counters
        self._event = event
        self.inference_ms = inference_ms
        self.calibrators = calibrators
        self.seq_gaps: Counter[str] = Counter()
        self._pending: list[PendingRow] = []
        # Symbols whose window changed since the last commit took their states (`window_states`)
        self._dirty: set[str] = set()
        window = models().window
        self.windows: dict[str, SymbolWindow] = {
            # Never shorter than what was saved: closes kept for a model that is gone (or not
            # deployed yet) are not thrown away.
            s.symbol: SymbolWindow.from_state(s, max(window, len(s.closes)))
            for s in saved
        }

    def subscriptions(self) -> tuple[str, ...]:
        """One filter for every symbol, or one per configured symbol (never `$share`: it would
        hand a symbol's bars to the pool's members in turn)."""
        if self.accepted is None:
            return (self.topics.bar_filter(),)
        return tuple(self.topics.bar(s) for s in sorted(self.accepted))

    def not_owned(self, topic: str) -> bool:
        """A bar of a symbol another pool member serves: acknowledged and counted, nothing more."""
        if self.partition.count == 1:
            return False
        symbol = self.topics.symbol_of_bar(topic)
        if symbol is None or self.partition.owns(symbol):
            return False
        self._counters["not_owned"] += 1
        return True

    def served(self) -> list[str]:
        """The symbols this agent keeps a window for and owns."""
        return sorted(s for s in self.windows if self.partition.owns(s))

    def warming(self, need: int) -> dict[str, str]:
        """Symbols whose window holds fewer than `need` closes, for the heartbeat."""
        return {
            s: f"{w.filled}/{need} bars" for s, w in sorted(self.windows.items()) if w.filled < need
        }

    def handle(self, msg: mqtt.MQTTMessage) -> Outcome | None:
        """Push the bar into its window; its forecasts are computed by `flush`."""
        symbol = self.topics.symbol_of_bar(msg.topic)
        if symbol is None:
            raise PayloadError("not a market/<symbol>/bar topic")
        bar = parse_bar(bytes(msg.payload), symbol, self.accepted)
        models = self._models()  # one consistent set for this bar, even during a swap
        window = self._window(symbol, models.window)
        check = check_seq(window.last_seq, bar.seq)
        if check is not SeqCheck.NEW:
            # Not a redelivery (the agent filters those): a feed that sent this seq again.
            what = "duplicate" if check is SeqCheck.DUPLICATE else "out-of-order"
            raise PayloadError(f"{what} seq {bar.seq}: last accepted seq is {window.last_seq}")
        last_seq = window.last_seq
        if window.push(bar.seq, bar.ts.isoformat(), bar.close):
            self._count_gap(symbol, last_seq, bar.seq)
        for model in models.window_models:
            size = model.manifest.window or 0
            if window.ready(size):  # else still warming up; the status heartbeat says how far
                self._pending.append(
                    PendingRow(
                        model,
                        symbol,
                        bar.seq,
                        bar.ts,
                        window.last_close,
                        window.latest(size).copy(),
                        window.has_gap(size),
                    )
                )
        self._dirty.add(symbol)
        if models.batchable:
            return None  # forecast by the pass's `flush`, with the pass's other bars
        # Nothing to share a call with: forecast now, as the bar arrives, rather than hold its
        # inference until the pass's commit (which delays the pass's acknowledgements).
        return Outcome(self.flush(), self.state_writes())

    def _count_gap(self, symbol: str, last_seq: int | None, seq: int) -> None:
        if not self.seq_gaps[symbol]:
            logger.warning(
                "%s: seq jumped from %s to %d; bars of this symbol went elsewhere or were lost "
                "upstream (a pool member with another partition count, or a $share "
                "subscription?); forecasts on windows with the gap say seq_gap=true",
                symbol,
                last_seq,
                seq,
            )
        self.seq_gaps[symbol] += 1
        self._counters["seq_gaps"] += 1

    def flush(self) -> list[OutMessage]:
        """The forecasts of the bars handled since the last flush, in the order of the bars."""
        rows, self._pending = self._pending, []
        by_model: dict[int, list[PendingRow]] = {}
        for row in rows:
            by_model.setdefault(id(row.model), []).append(row)
        results: dict[int, tuple[Result, Levels | ModelError | None]] = {}
        for model_rows in by_model.values():
            outputs = infer_rows(model_rows[0].model, model_rows)
            levels = _levels(model_rows, outputs, self._calibrate(model_rows, outputs))
            results.update(zip(map(id, model_rows), zip(outputs, levels, strict=True), strict=True))
        return [self._message(row, *results[id(row)]) for row in rows]

    def _calibrate(self, rows: list[PendingRow], outputs: list[Result]) -> list[Calibrated | None]:
        """After inference, for one model's rows: score the forecasts that end at these bars,
        then correct each raw `[H, Q]` output (a failed row is only scored)."""
        model = rows[0].model
        if model.manifest.task != "price":
            return [None] * len(rows)
        try:
            return self.calibrators.apply(
                model,
                [(r.symbol, r.seq, r.last_close) for r in rows],
                [None if isinstance(o, ModelError) else o[0][0] for o in outputs],
            )
        except Exception:  # a bug must not fail the commit: these bars are served uncorrected
            self._counters["errors"] += 1
            logger.exception("calibration of %s failed on %d bar(s)", model.model_id, len(rows))
            return [None] * len(rows)

    def window_states(self) -> list[WindowState]:
        """The windows that changed since the last call, for the commit of their bars: one copy
        per symbol and commit, not one per bar."""
        dirty, self._dirty = self._dirty, set()
        return [self.windows[s].state() for s in dirty]

    def state_writes(self) -> list[StateWrite]:
        """The calibration states the flushed forecasts changed, for the same transaction."""
        return [self.calibrators.write()] if self.calibrators.changed else []

    def _window(self, symbol: str, size: int) -> SymbolWindow:
        window = self.windows.get(symbol)
        if window is None:
            if len(self.windows) >= self.max_symbols:
                raise PayloadError(f"symbol limit reached ({self.max_symbols})")
            window = self.windows[symbol] = SymbolWindow(symbol, size)
        elif window.capacity < size:  # a model with a longer window was swapped in
            window.resize(size)
        return window

    def _message(
        self, row: PendingRow, result: Result, levels: Levels | ModelError | None
    ) -> OutMessage:
        try:
            if isinstance(result, ModelError):
                raise result
            if isinstance(levels, ModelError):
                raise levels
            return self._forecast(row, *result, levels)
        except ModelError as exc:
            self._counters["errors"] += 1
            logger.warning("%s", exc)
            return self._event("inference_error", str(exc), row.model)
        except Exception as exc:  # a bug must not fail the commit (the pass would be re-sent)
            self._counters["errors"] += 1
            logger.exception("forecast of %s seq %d failed", row.symbol, row.seq)
            return self._event("internal_error", f"{row.symbol} seq {row.seq}: {exc}", row.model)

    def _forecast(
        self, row: PendingRow, output: np.ndarray, latency_ms: float, levels: Levels | None
    ) -> OutMessage:
        """`levels` are given for a price model's forecast (`_levels`), None for a trend's."""
        model = row.model
        self.inference_ms.add(latency_ms)
        forecast: PriceForecast | TrendForecast
        if levels is not None:
            forecast = price_forecast(
                self.agent_id,
                row.symbol,
                row.seq,
                row.ts,
                row.last_close,
                model,
                levels,
                latency_ms,
            )
            topic = self.topics.price_forecast(row.symbol)
        else:
            forecast = trend_forecast(
                self.agent_id,
                row.symbol,
                row.seq,
                row.ts,
                model,
                output,
                latency_ms,
            )
            topic = self.topics.trend_forecast(row.symbol)
        if row.seq_gap:
            forecast = forecast.model_copy(update={"seq_gap": True})
        self._counters["forecasts"] += 1
        # Retained: a late joiner (a gateway after its restart, a new watcher) sees it at once.
        return OutMessage(topic, forecast.model_dump_json().encode(), retain=True)
