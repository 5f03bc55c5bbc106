"""What the gateway knows: the latest forecasts, nowcasts and agent statuses, and a bounded
history per symbol, fed by MQTT messages (any thread) and read by HTTP handlers.

Bounds (docs/WEB.md, "Memory"): per symbol at most `points` price forecasts, `points` trend
forecasts and `points` realized closes, and at most `bytes_per_symbol` of their JSON (the oldest
go first); at most `max_symbols` symbols, `max_regions` nowcasts and `max_agents` statuses (new
names beyond that are dropped and counted). Everything is replaced from retained messages after a
restart, so a retained forecast topic would refill it as well."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from device.schemas import AgentStatus, Nowcast, PriceForecast, TrendForecast
from device.topics import Topics
from device.web.settings import HistorySettings

__all__ = [
    "Close",
    "Kind",
    "NowcastOut",
    "PriceOut",
    "StatusOut",
    "Store",
    "SymbolView",
    "TrendOut",
    "Update",
]

logger = logging.getLogger(__name__)

Kind = Literal["price", "trend", "nowcast", "status"]
# What entries count against a symbol's byte budget: close to what they occupy in memory (a close
# is a slotted object with a timestamp string, ~200 bytes by sys.getsizeof; a history entry is its
# compact JSON as one bytes object, ~50 bytes over its length), so the bound is a memory bound.
_CLOSE_BYTES = 200
_ENTRY_OVERHEAD = 50


# The contract's models, with unknown fields kept: a newer agent's extra fields (a nowcast's
# track or impacts, say) pass through to the API instead of failing validation.
class PriceOut(PriceForecast):
    model_config = ConfigDict(extra="allow", frozen=True)


class TrendOut(TrendForecast):
    model_config = ConfigDict(extra="allow", frozen=True)


class NowcastOut(Nowcast):
    model_config = ConfigDict(extra="allow", frozen=True)


class StatusOut(AgentStatus):
    model_config = ConfigDict(extra="allow")


_MODELS: dict[Kind, type[BaseModel]] = {
    "price": PriceOut,
    "trend": TrendOut,
    "nowcast": NowcastOut,
    "status": StatusOut,
}


@dataclass(frozen=True, slots=True)
class Close:
    """A realized close the gateway has seen, from a price forecast's input bar."""

    ts: str
    seq: int
    close: float


@dataclass(frozen=True)
class Update:
    """One change for the live stream: `kind`, whose (`name`: symbol, region or agent), and the
    new payload (None: a retained message was cleared)."""

    kind: Kind
    name: str
    data: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "data": self.data}


@dataclass
class _Series:
    """One symbol's bounded history, kept as compact JSON (a parsed forecast takes several times
    its JSON in memory); `bytes` counts what it holds."""

    latest: dict[Kind, dict[str, Any]] = field(default_factory=dict)
    history: dict[Kind, deque[bytes]] = field(
        default_factory=lambda: {"price": deque(), "trend": deque()}
    )
    closes: deque[Close] = field(default_factory=deque)
    bytes: int = 0
    updated: float = 0.0


@dataclass(frozen=True)
class SymbolView:
    """A copy of one symbol's state, safe to read outside the lock."""

    symbol: str
    price: dict[str, Any] | None
    trend: dict[str, Any] | None
    prices: list[dict[str, Any]]
    trends: list[dict[str, Any]]
    closes: list[Close]


class Store:
    """Thread-safe state; `ingest` takes a raw MQTT message, `take_updates` hands the stream the
    changes since its last call (the latest per name, in arrival order)."""

    def __init__(
        self, history: HistorySettings, topics: Topics, clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = history
        self.topics = topics
        self._clock = clock
        self._lock = threading.Lock()
        self._symbols: dict[str, _Series] = {}
        self._named: dict[Kind, dict[str, dict[str, Any]]] = {"nowcast": {}, "status": {}}
        self._pending: dict[tuple[Kind, str], Update] = {}
        self.counters: dict[str, int] = {"messages": 0, "invalid": 0, "dropped": 0, "stale": 0}
        self.connected = False
        self.last_message_at: float | None = None
        self._wake: Callable[[], None] | None = None

    def on_change(self, wake: Callable[[], None] | None) -> None:
        """Call `wake` (from the writing thread) when a change arrives and none was waiting, so
        the stream sends at once instead of on a timer; once per batch, not per message."""
        self._wake = wake

    # ----- writing (the MQTT thread) -----------------------------------------------------------

    def route(self, topic: str) -> tuple[Kind, str] | None:
        """(kind, name) of a subscribed topic, or None for a topic the gateway does not read."""
        if not topic.startswith(self.topics.prefix):
            return None
        parts = topic[len(self.topics.prefix) :].split("/")
        if len(parts) != 3 or not all(parts):
            return None
        head, mid, tail = parts
        if head == "forecast" and mid in ("price", "trend"):
            return ("price" if mid == "price" else "trend"), tail
        if head == "nowcast" and mid == "gdp":
            return "nowcast", tail
        if head == "fleet" and tail == "status":
            return "status", mid
        return None

    def ingest(self, topic: str, payload: bytes) -> Update | None:
        """Validate and keep one message; None when it is ignored (unknown topic, invalid,
        older than what is kept, or over a bound)."""
        where = self.route(topic)
        with self._lock:
            self.counters["messages"] += 1
            self.last_message_at = self._clock()
        if where is None:
            return None
        kind, name = where
        if not payload:  # a cleared retained message
            return self._forget(kind, name)
        try:
            model = _MODELS[kind].model_validate_json(payload)
        except ValidationError as exc:
            logger.warning("ignoring invalid %s on %s: %s", kind, topic, exc.errors()[:1])
            with self._lock:
                self.counters["invalid"] += 1
            return None
        data = model.model_dump(mode="json")
        with self._lock:
            if kind in ("price", "trend"):
                kept = self._keep_forecast(kind, name, data, model.model_dump_json().encode())
            else:
                kept = self._keep_named(kind, name, data)
            if not kept:
                return None
            update = Update(kind, name, data)
            first = not self._pending
            self._pending.pop((kind, name), None)  # re-inserted last: arrival order
            self._pending[(kind, name)] = update
        if first:
            self._woken()
        return update

    def _keep_named(self, kind: Kind, name: str, data: dict[str, Any]) -> bool:
        table = self._named[kind]
        bound = self.limits.max_regions if kind == "nowcast" else self.limits.max_agents
        if name not in table and len(table) >= bound:
            self.counters["dropped"] += 1
            return False
        table[name] = data
        return True

    def _keep_forecast(self, kind: Kind, symbol: str, data: dict[str, Any], raw: bytes) -> bool:
        if data.get("symbol") != symbol:
            self.counters["invalid"] += 1
            return False
        series = self._symbols.get(symbol)
        if series is None:
            if len(self._symbols) >= self.limits.max_symbols:
                self.counters["dropped"] += 1
                return False
            series = self._symbols[symbol] = _Series()
        latest = series.latest.get(kind)
        # QoS 1 redeliveries and late messages: only a newer bar, or another model's forecast of
        # the same bar, replaces what is shown.
        if latest is not None and (
            data["seq"] < latest["seq"]
            or (data["seq"] == latest["seq"] and data["key"] == latest["key"])
        ):
            self.counters["stale"] += 1
            return False
        series.latest[kind] = data
        series.history[kind].append(raw)
        series.bytes += len(raw) + _ENTRY_OVERHEAD
        if kind == "price" and (not series.closes or data["seq"] > series.closes[-1].seq):
            series.closes.append(Close(data["ts"], data["seq"], data["last_close"]))
            series.bytes += _CLOSE_BYTES
        series.updated = self._clock()
        self._trim(series)
        return True

    def _trim(self, series: _Series) -> None:
        points = self.limits.points
        for items in series.history.values():
            while len(items) > points:
                series.bytes -= len(items.popleft()) + _ENTRY_OVERHEAD
        while len(series.closes) > points:
            series.closes.popleft()
            series.bytes -= _CLOSE_BYTES
        # Over the byte budget: drop the oldest entry of the longest history first (one of each
        # kind always stays, the latest).
        while series.bytes > self.limits.bytes_per_symbol:
            longest = max(series.history.values(), key=len)
            if len(longest) > 1:
                series.bytes -= len(longest.popleft()) + _ENTRY_OVERHEAD
            elif len(series.closes) > 1:
                series.closes.popleft()
                series.bytes -= _CLOSE_BYTES
            else:
                break

    def _forget(self, kind: Kind, name: str) -> Update | None:
        with self._lock:
            if kind in ("price", "trend"):
                series = self._symbols.get(name)
                if series is None or series.latest.pop(kind, None) is None:
                    return None
            elif self._named[kind].pop(name, None) is None:
                return None
            update = Update(kind, name, None)
            first = not self._pending
            self._pending[(kind, name)] = update
        if first:
            self._woken()
        return update

    def _woken(self) -> None:
        wake = self._wake
        if wake is not None:
            wake()

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self.connected = connected

    # ----- reading (HTTP handlers and the stream) ------------------------------------------------

    def take_updates(self) -> list[Update]:
        with self._lock:
            updates, self._pending = list(self._pending.values()), {}
        return updates

    def symbols(self) -> list[SymbolView]:
        with self._lock:
            names = sorted(self._symbols)
        return [v for v in (self.symbol(n, 1) for n in names) if v is not None]

    def symbol(self, symbol: str, limit: int) -> SymbolView | None:
        """The symbol's latest forecasts and its last `limit` forecasts and closes of each kind."""
        with self._lock:
            series = self._symbols.get(symbol)
            if series is None:
                return None
            latest = dict(series.latest)
            prices = list(series.history["price"])[-limit:]
            trends = list(series.history["trend"])[-limit:]
            closes = list(series.closes)[-limit:]
        # Parsed outside the lock: the MQTT thread need not wait for a large history request.
        return SymbolView(
            symbol=symbol,
            price=latest.get("price"),
            trend=latest.get("trend"),
            prices=[json.loads(r) for r in prices],
            trends=[json.loads(r) for r in trends],
            closes=closes,
        )

    def named(self, kind: Literal["nowcast", "status"]) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(sorted(self._named[kind].items()))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "connected": self.connected,
                "last_message_at": self.last_message_at,
                "symbols": len(self._symbols),
                "bytes": sum(s.bytes for s in self._symbols.values()),
                "counters": dict(self.counters),
            }
