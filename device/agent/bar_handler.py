"""The agent's own handler: `market/<symbol>/bar` in, a price or trend forecast per window model
out. It keeps each symbol's window of closes (restored from the outbox at start) and, through
`Calibrators`, corrects each price forecast after inference (state in the same transaction)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

import numpy as np
import paho.mqtt.client as mqtt

from device.agent.calibrators import Calibrators
from device.agent.host import Outcome
from device.bars import SeqCheck, SymbolWindow, check_seq, parse_bar
from device.calibration import Calibrated
from device.errors import ModelError, PayloadError
from device.forecasts import check_finite, price_forecast, trend_forecast
from device.health import LatencyWindow
from device.modelset import LoadedModel, ModelSet
from device.outbox import OutMessage, WindowState
from device.schemas import PriceForecast, TrendForecast
from device.settings import AgentSettings
from device.topics import Topics

__all__ = ["BarHandler"]

logger = logging.getLogger(__name__)

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
        self.share_group = settings.share_group
        self._models = models
        self._counters = counters
        self._event = event
        self.inference_ms = inference_ms
        self.calibrators = calibrators
        window = models().window
        self.windows: dict[str, SymbolWindow] = {
            # Never shorter than what was saved: closes kept for a model that is gone (or not
            # deployed yet) are not thrown away.
            s.symbol: SymbolWindow.from_state(s, max(window, len(s.closes)))
            for s in saved
        }

    def subscriptions(self) -> tuple[str, ...]:
        """One filter for every symbol, or one per configured symbol; shared when grouped."""
        if self.accepted is None:
            filters: tuple[str, ...] = (self.topics.bar_filter(),)
        else:
            filters = tuple(self.topics.bar(s) for s in sorted(self.accepted))
        if self.share_group:
            filters = tuple(f"$share/{self.share_group}/{f}" for f in filters)
        return filters

    def warming(self, need: int) -> dict[str, str]:
        """Symbols whose window holds fewer than `need` closes, for the heartbeat."""
        return {
            s: f"{w.filled}/{need} bars" for s, w in sorted(self.windows.items()) if w.filled < need
        }

    def handle(self, msg: mqtt.MQTTMessage) -> Outcome | None:
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
        window.push(bar.seq, bar.ts.isoformat(), bar.close)
        outcome = Outcome(window=window.state())
        for model in models.window_models:
            if not window.ready(model.manifest.window or 0):
                continue  # still warming up; the status heartbeat says how far
            try:
                outcome.messages.append(self._forecast(model, window, bar.seq, bar.ts))
            except ModelError as exc:
                self._counters["errors"] += 1
                logger.warning("%s", exc)
                outcome.messages.append(self._event("inference_error", str(exc), model))
                self._calibrate(model, window, bar.seq, None)  # still score what ended here
        if self.calibrators.changed:
            outcome.writes.append(self.calibrators.write())
        return outcome

    def _window(self, symbol: str, size: int) -> SymbolWindow:
        window = self.windows.get(symbol)
        if window is None:
            if len(self.windows) >= self.max_symbols:
                raise PayloadError(f"symbol limit reached ({self.max_symbols})")
            window = self.windows[symbol] = SymbolWindow(symbol, size)
        elif window.capacity < size:  # a model with a longer window was swapped in
            window.resize(size)
        return window

    def _forecast(
        self, model: LoadedModel, window: SymbolWindow, seq: int, ts: datetime
    ) -> OutMessage:
        output, latency_ms = model.model.run_window(window.latest(model.manifest.window or 0))
        self.inference_ms.add(latency_ms)
        forecast: PriceForecast | TrendForecast
        if model.manifest.task == "price":
            check_finite(model, output)
            calibrated = self._calibrate(model, window, seq, output[0])
            forecast = price_forecast(
                self.agent_id,
                window.symbol,
                seq,
                ts,
                window.last_close,
                model,
                output if calibrated is None else calibrated,
                latency_ms,
            )
            topic = self.topics.price_forecast(window.symbol)
        else:
            forecast = trend_forecast(
                self.agent_id, window.symbol, seq, ts, model, output, latency_ms
            )
            topic = self.topics.trend_forecast(window.symbol)
        self._counters["forecasts"] += 1
        # Retained: a late joiner (a gateway after its restart, a new watcher) sees it at once.
        return OutMessage(topic, forecast.model_dump_json().encode(), retain=True)

    def _calibrate(
        self, model: LoadedModel, window: SymbolWindow, seq: int, raw: np.ndarray | None
    ) -> Calibrated | None:
        """After inference, per symbol: score the forecasts that end at this bar, then correct
        this bar's raw `[H, Q]` output (None: the model failed; only the scoring happens)."""
        return self.calibrators.apply(model, window.symbol, seq, window.last_close, raw)
