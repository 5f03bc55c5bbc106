"""`forecaster watch`: the latest forecast per symbol in a live terminal table, for analysts."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import paho.mqtt.client as mqtt
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from device.mqtt import BrokerAddress
from device.schemas import AgentStatus, LiveAccuracy, PriceForecast, TrendForecast, utcnow
from device.topics import Topics
from forecaster.ops.mqtt import tool_client

__all__ = ["ForecastBoard", "Received", "render_board", "watch"]

logger = logging.getLogger(__name__)

Forecast = PriceForecast | TrendForecast


@dataclass(frozen=True)
class Received:
    """A validated forecast and when it arrived here (monotonic clock)."""

    forecast: Forecast
    at: float


class ForecastBoard:
    """What the live view shows: the latest forecast per symbol and model, agent heartbeats and
    counters. QoS 1 redeliveries are dropped by forecast key; thread-safe (paho's network thread
    adds, the display thread reads). With `history` > 0 the last `history` price forecasts are
    kept too, for scoring them later (the demo's summary)."""

    def __init__(self, topics: Topics | None = None, history: int = 0, seen: int = 100_000) -> None:
        self.topics = topics or Topics()
        self._lock = threading.Lock()
        self._seen_order: deque[str] = deque(maxlen=seen)
        self._seen: set[str] = set()
        self.price: dict[tuple[str, str], Received] = {}
        self.trend: dict[tuple[str, str], Received] = {}
        self.statuses: dict[str, AgentStatus] = {}
        self.history: deque[Received] = deque(maxlen=history)
        self.latencies_ms: deque[float] = deque(maxlen=100_000)
        self.received = 0
        self.duplicates = 0
        self.invalid = 0
        self.last_invalid = ""

    def add(self, topic: str, payload: bytes, at: float | None = None) -> Forecast | None:
        """Take one message from `forecast/#` or `fleet/+/status`; returns the new forecast, or
        None for a status, a duplicate or an invalid message (counted, never raised)."""
        parts = topic.removeprefix(self.topics.prefix).split("/")
        at = time.monotonic() if at is None else at
        try:
            if parts[0] == "fleet" and len(parts) == 3 and parts[2] == "status":
                status = AgentStatus.model_validate_json(payload)
                with self._lock:
                    self.statuses[status.agent] = status
                return None
            if parts[0] != "forecast" or len(parts) != 3 or parts[1] not in ("price", "trend"):
                raise ValueError(f"unexpected topic {topic}")
            model = PriceForecast if parts[1] == "price" else TrendForecast
            forecast: Forecast = model.model_validate_json(payload)
        except (ValidationError, ValueError) as exc:
            with self._lock:
                self.invalid += 1
                self.last_invalid = f"{topic}: {str(exc).splitlines()[0]}"
            logger.warning("ignoring invalid message on %s: %s", topic, exc)
            return None
        with self._lock:
            if forecast.key in self._seen:
                self.duplicates += 1
                return None
            if len(self._seen_order) == self._seen_order.maxlen:
                self._seen.discard(self._seen_order[0])
            self._seen_order.append(forecast.key)
            self._seen.add(forecast.key)
            self.received += 1
            self.latencies_ms.append(forecast.latency_ms)
            entry = Received(forecast, at)
            slot = (forecast.symbol, forecast.model.name)
            if isinstance(forecast, PriceForecast):
                board = self.price
                self.history.append(entry)
            else:
                board = self.trend
            shown = board.get(slot)
            # An agent's backlog from before a restart arrives after newer forecasts: it never
            # replaces the newest one shown.
            if shown is None or forecast.seq >= shown.forecast.seq:
                board[slot] = entry
        return forecast

    def snapshot(self) -> ForecastBoard:
        """A consistent copy to render while messages keep arriving."""
        with self._lock:
            copy = ForecastBoard(self.topics)
            copy.price, copy.trend = dict(self.price), dict(self.trend)
            copy.statuses = dict(self.statuses)
            copy.received, copy.duplicates = self.received, self.duplicates
            copy.invalid, copy.last_invalid = self.invalid, self.last_invalid
            copy.latencies_ms = deque(self.latencies_ms)
        return copy

    def price_history(self) -> list[Received]:
        with self._lock:
            return list(self.history)


def _band(forecast: PriceForecast, h_index: int) -> tuple[float, float, float]:
    """Median and the widest central band (outermost quantiles) of one horizon, in price."""
    levels = forecast.prices[h_index]
    qs = forecast.quantiles
    mid = min(range(len(qs)), key=lambda i: abs(qs[i] - 0.5))
    return levels[mid], levels[0], levels[-1]


def _age(produced_at: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - produced_at).total_seconds())
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _trend_cell(entry: Received | None) -> Text:
    if entry is None:
        return Text("")
    f = entry.forecast
    assert isinstance(f, TrendForecast)
    best = max(range(len(f.proba)), key=f.proba.__getitem__)
    style = {"bull": "green", "bear": "red"}.get(f.classes[best], "yellow")
    return Text(f"{f.classes[best]} {f.proba[best]:.0%}", style=style)


def _status_line(status: AgentStatus) -> str:
    state = "[green]online[/]" if status.online else "[red]offline[/]"
    counters = status.counters
    parts = [
        f"{status.agent} {state}",
        f"{len(status.models)} model{'s' if len(status.models) != 1 else ''}",
        f"up {status.uptime_s:.0f} s",
        f"{counters.get('forecasts', 0)} forecasts",
    ]
    if counters.get("dead_letters"):
        parts.append(f"[yellow]{counters['dead_letters']} dead letters[/]")
    if "p50" in status.latency_ms:
        parts.append(f"inference p50 {status.latency_ms['p50']:.2f} ms")
    if "message_p50" in status.latency_ms:
        parts.append(f"message p50 {status.latency_ms['message_p50']:.2f} ms")
    if status.warming:
        parts.append(f"warming {len(status.warming)} symbols")
    return " · ".join(parts)


def _live_accuracy(board: ForecastBoard, forecast: PriceForecast) -> LiveAccuracy | None:
    """The publishing agent's live accuracy for this forecast's model version and symbol."""
    status = board.statuses.get(forecast.agent)
    if status is None:
        return None
    model = f"price/{forecast.model.name}@{forecast.model.version}"
    return next(
        (a for a in status.accuracy if a.model == model and a.symbol == forecast.symbol), None
    )


def _accuracy_cell(board: ForecastBoard, forecast: PriceForecast) -> Text:
    """E.g. "80% band: 78% / 90% band: 91% of the last 250": how often the bands held lately."""
    acc = _live_accuracy(board, forecast)
    if acc is None or not acc.coverage:
        return Text("")
    per_horizon = acc.scored // max(1, len(forecast.horizons))
    lines = []
    for name, share in acc.coverage.items():
        off = abs(share * 100 - float(name)) > 5
        lines.append(Text(f"{name}% band: {share:.0%}", style="yellow" if off else ""))
    text = Text("\n").join(lines)
    text.append(f"\nof the last {per_horizon}")
    return text


def _price(value: float) -> str:
    """Few characters for a handheld: no decimals in the thousands, more for small prices."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.4g}"


def _row(
    board: ForecastBoard,
    symbol: str,
    price: Received | None,
    trend: Received | None,
    horizons: list[int],
) -> list[str | Text]:
    """The cells of one symbol's row (its price model's forecast, else its trend's)."""
    shown = price or trend
    assert shown is not None
    f = shown.forecast
    cells: list[str | Text] = [symbol, f"{f.ts:%Y-%m-%d}\n#{f.seq}"]
    if price is not None:
        pf = price.forecast
        assert isinstance(pf, PriceForecast)
        cells.append(_price(pf.last_close))
        for h in horizons:
            if h not in pf.horizons:
                cells.append("")
                continue
            median, low, high = _band(pf, pf.horizons.index(h))
            style = "green" if median >= pf.last_close else "red"
            cells.append(Text(f"{_price(median)}\n{_price(low)}–{_price(high)}", style=style))
        cells.append(_accuracy_cell(board, pf))
    else:
        cells += [""] * (2 + len(horizons))
    cells.append(_trend_cell(trend))
    cells.append(
        "\n".join(
            f"{kind} {e.forecast.model.name}"
            for kind, e in (("price", price), ("trend", trend))
            if e is not None
        )
    )
    cells.append(f"{f.latency_ms:.2f}")
    return cells


def _caption(board: ForecastBoard) -> str:
    """Counts, the band's meaning, problems, then one line per agent."""
    quantiles = sorted({q for e in board.price.values() for q in e.forecast.quantiles})  # type: ignore[union-attr]
    notes = [f"{board.received} forecasts"]
    if quantiles:
        notes.append(
            f"+Nd: median, and {quantiles[0]:.0%}–{quantiles[-1]:.0%} band, N trading days ahead"
        )
    if board.duplicates:
        notes.append(f"{board.duplicates} redeliveries dropped")
    if board.invalid:
        notes.append(f"[yellow]{board.invalid} invalid[/] ({escape(board.last_invalid)})")
    lines = [" · ".join(notes)] + [_status_line(s) for _, s in sorted(board.statuses.items())]
    return "\n".join(lines)


def render_board(board: ForecastBoard, now: datetime | None = None) -> Table:
    """One row per symbol and price model: last close, median and band per horizon, how often the
    bands held lately (the agent's live accuracy), the trend regime when a trend model serves the
    symbol, inference latency and age."""
    now = now or utcnow()
    board = board.snapshot()
    horizons = sorted(
        {h for e in board.price.values() for h in e.forecast.horizons}  # type: ignore[union-attr]
    )
    table = Table(title="Forecaster: latest forecasts", title_justify="left")
    table.add_column("symbol", style="bold", no_wrap=True)
    table.add_column("bar", justify="right", no_wrap=True)
    table.add_column("last", justify="right", no_wrap=True)
    for h in horizons:
        table.add_column(f"+{h}d", justify="right", no_wrap=True)
    table.add_column("live bands", no_wrap=True)
    table.add_column("trend", no_wrap=True)
    table.add_column("model")
    table.add_column("lat ms", justify="right", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)

    trend_by_symbol = {symbol: e for (symbol, _), e in sorted(board.trend.items())}
    rows: list[tuple[str, Received | None, Received | None]] = [
        (symbol, entry, trend_by_symbol.get(symbol))
        for (symbol, _), entry in sorted(board.price.items())
    ]
    priced = {symbol for symbol, _, _ in rows}
    rows += [(s, None, e) for s, e in sorted(trend_by_symbol.items()) if s not in priced]
    for symbol, price, trend in sorted(rows, key=lambda r: r[0]):
        shown = price or trend
        assert shown is not None
        age = _age(shown.forecast.produced_at, now)
        table.add_row(*_row(board, symbol, price, trend, horizons), age)
    if not rows:
        table.add_row("[dim]waiting for forecasts[/]", *[""] * (len(table.columns) - 1))

    table.caption = _caption(board)
    table.caption_justify = "left"
    return table


def watch(
    address: BrokerAddress,
    *,
    topics: Topics | None = None,
    duration: float | None = None,
    console: Console | None = None,
    board: ForecastBoard | None = None,
    refresh_per_second: float = 4.0,
    stop: threading.Event | None = None,
    subscribed: threading.Event | None = None,
) -> ForecastBoard:
    """Show the live table until `duration` seconds pass, `stop` is set, or Ctrl-C; returns the
    board with everything received. `subscribed` is set once the broker confirmed the
    subscriptions, so a caller can start a feed without missing the first forecasts."""
    topics = topics or Topics()
    board = board or ForecastBoard(topics)
    stop = stop or threading.Event()

    def on_message(msg: mqtt.MQTTMessage) -> None:
        board.add(msg.topic, bytes(msg.payload))

    with tool_client(address, on_message=on_message) as tool:
        tool.subscribe([topics.forecast_filter(), topics.status_filter()])
        if subscribed is not None:
            subscribed.set()
        _show(board, stop, duration, console, refresh_per_second)
    return board


def _show(
    board: ForecastBoard,
    stop: threading.Event,
    duration: float | None,
    console: Console | None,
    refresh_per_second: float,
) -> None:
    """Redraw the table until `duration` passes, `stop` is set or Ctrl-C."""
    deadline = math.inf if not duration else time.monotonic() + duration
    try:
        with Live(
            render_board(board), console=console, refresh_per_second=refresh_per_second
        ) as live:
            while not stop.is_set() and time.monotonic() < deadline:
                stop.wait(min(1.0 / refresh_per_second, max(0.0, deadline - time.monotonic())))
                live.update(render_board(board))
        if not live.console.is_terminal:
            live.console.line()  # rich ends the last frame with a newline only on a terminal
    except KeyboardInterrupt:
        logger.info("watch stopped by the user")
