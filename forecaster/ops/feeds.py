"""Real daily bars as a market feed: sources (shipped datasets, CSV files) and a paced replayer."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pandas as pd
from pydantic import ValidationError

from device.bars import validation_reason
from device.schemas import Bar, MacroRelease
from device.topics import Topics
from forecaster.data.loaders import DATASETS, load_dataset, read_dated_csv
from forecaster.errors import DataError, FeedError

__all__ = [
    "Pacer",
    "ReplayResult",
    "bars_from_frame",
    "copy_bars",
    "csv_bars",
    "dataset_bars",
    "interleave",
    "read_ohlcv_csv",
    "replay",
]

logger = logging.getLogger(__name__)

OHLCV = ("open", "high", "low", "close", "volume")


def _slice(
    frame: pd.DataFrame, start: date | None, end: date | None, limit: int | None
) -> pd.DataFrame:
    if start is not None:
        frame = frame[frame.index >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame.index <= pd.Timestamp(end)]
    return frame.iloc[:limit] if limit is not None else frame


def bars_from_frame(
    frame: pd.DataFrame,
    symbol: str,
    *,
    start: date | None = None,
    end: date | None = None,
    limit: int | None = None,
    seq_start: int = 0,
) -> list[Bar]:
    """Bars of one symbol from a date-indexed frame with columns open..volume, oldest first;
    seq counts from `seq_start` within the selected period."""
    if limit is not None and limit < 1:
        raise FeedError(f"limit must be at least 1, not {limit}")
    frame = _slice(frame, start, end, limit)
    if frame.empty:
        raise FeedError(f"{symbol}: no bars between {start or 'the start'} and {end or 'the end'}")
    rows = frame[list(OHLCV)].to_numpy(dtype=float)
    bars = []
    for i, (day, (o, h, lo, c, v)) in enumerate(zip(frame.index, rows, strict=True)):
        ts = datetime(day.year, day.month, day.day, tzinfo=UTC)
        try:
            bar = Bar(
                symbol=symbol, ts=ts, open=o, high=h, low=lo, close=c, volume=v, seq=seq_start + i
            )
        except ValidationError as exc:  # a symbol MQTT topics cannot carry, or a bad value
            raise DataError(f"{symbol} {ts.date()}: {validation_reason('bar', exc)}") from exc
        bars.append(bar)
    return bars


def dataset_bars(
    name: str,
    symbol: str | None = None,
    *,
    start: date | None = None,
    end: date | None = None,
    limit: int | None = None,
    seq_start: int = 0,
) -> list[Bar]:
    """Daily OHLCV bars of a dataset shipped with `arch` (`sp500` -> SPX, `nasdaq` -> NDX)."""
    frame = load_dataset(name).rename(columns=str.lower)
    return bars_from_frame(
        frame,
        symbol or DATASETS[name][1],
        start=start,
        end=end,
        limit=limit,
        seq_start=seq_start,
    )


def read_ohlcv_csv(
    path: Path, date_column: str = "date", close_column: str = "close"
) -> pd.DataFrame:
    """A date-indexed frame with columns open..volume from a CSV holding at least a date and a
    close column (read as training data is, `read_dated_csv`); missing open/high/low become the
    close and a missing volume becomes 0."""
    frame = read_dated_csv(
        path, date_column, close_column, optional=("open", "high", "low", "volume")
    )
    close = frame[close_column]
    out = {name: frame[name] if name in frame else close for name in ("open", "high", "low")}
    out["close"] = close
    out["volume"] = frame["volume"] if "volume" in frame else pd.Series(0.0, index=frame.index)
    return pd.DataFrame(out)[list(OHLCV)]


def csv_bars(
    path: Path,
    symbol: str | None = None,
    *,
    date_column: str = "date",
    close_column: str = "close",
    start: date | None = None,
    end: date | None = None,
    limit: int | None = None,
    seq_start: int = 0,
) -> list[Bar]:
    """Daily bars from a CSV file; the symbol defaults to the file's stem."""
    frame = read_ohlcv_csv(path, date_column, close_column)
    return bars_from_frame(
        frame, symbol or path.stem, start=start, end=end, limit=limit, seq_start=seq_start
    )


def copy_bars(bars: Sequence[Bar], copies: int) -> list[list[Bar]]:
    """`copies` renamed copies of one symbol's bars (SPX -> SPX00, SPX01, ...), to load an agent
    with many symbols of real data."""
    if copies < 1:
        raise FeedError(f"copies must be at least 1, not {copies}")
    if not bars:
        return [[] for _ in range(copies)]
    width = max(2, len(str(copies - 1)))
    base = bars[0].symbol
    return [
        [b.model_copy(update={"symbol": f"{base}{i:0{width}d}"}) for b in bars]
        for i in range(copies)
    ]


def interleave(sources: Iterable[Sequence[Bar]]) -> Iterator[Bar]:
    """Several symbols' bars merged in time order (ties keep the order the sources were given)."""
    tagged = [[(b.ts, k, i, b) for i, b in enumerate(src)] for k, src in enumerate(sources)]
    for _ts, _k, _i, bar in heapq.merge(*tagged):
        yield bar


@dataclass
class Pacer:
    """Publish i is due at start + i / rate on a monotonic clock: a slow send delays only itself,
    never the schedule after it (no sleep-per-message drift). rate 0 means never wait."""

    rate: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    start: float | None = None

    def __post_init__(self) -> None:
        if not (self.rate >= 0 and np.isfinite(self.rate)):
            raise FeedError(f"rate must be a finite number >= 0 bars per second, not {self.rate}")

    def due(self, index: int) -> float:
        if self.start is None:
            self.start = self.clock()
        return self.start if self.rate == 0 else self.start + index / self.rate

    def wait(self, index: int, stop: threading.Event | None = None) -> None:
        """Block until publish `index` is due (or `stop` is set)."""
        delay = self.due(index) - self.clock()
        if delay <= 0:
            return
        if stop is not None:
            stop.wait(delay)
        else:
            self.sleep(delay)


@dataclass
class ReplayResult:
    """What a replay sent: bars published and acknowledged (accepted or refused by the broker),
    per-symbol counts, the period."""

    published: int = 0
    acknowledged: int = 0
    per_symbol: dict[str, int] = field(default_factory=dict)
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    elapsed_s: float = 0.0
    stopped: bool = False
    rejected: dict[str, int] = field(default_factory=dict)  # broker's reason -> bars refused

    @property
    def unacknowledged(self) -> int:
        return self.published - self.acknowledged

    @property
    def rate(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else float("inf")


# What a feed publishes: market bars (market/<symbol>/bar) or macro releases (macro/<series>).
FeedItem = Bar | MacroRelease


def _addressed(item: FeedItem, topics: Topics) -> tuple[str, str, datetime, str]:
    """Topic, source (symbol or series), time and a label for messages, of one feed item."""
    if isinstance(item, Bar):
        return topics.bar(item.symbol), item.symbol, item.ts, f"{item.symbol} seq {item.seq}"
    return (
        topics.macro(item.series),
        item.series,
        item.released_at,
        f"{item.series} {item.period}",
    )


def replay(
    bars: Iterable[FeedItem],
    client: mqtt.Client,
    rate: float,
    topics: Topics,
    qos: int = 1,
    *,
    ack_timeout: float = 30.0,
    max_pending: int = 1000,
    stop: threading.Event | None = None,
    on_sent: Callable[[FeedItem, float], None] | None = None,
) -> ReplayResult:
    """Publish `bars` in order on `market/<symbol>/bar` (macro releases on `macro/<series>`,
    counted per series), `rate` per second (0: as fast as the
    broker acknowledges), with at most `max_pending` unacknowledged; then wait up to `ack_timeout`
    seconds for the rest. `on_sent(bar, monotonic_time)` is called after each publish. The
    client's own `on_publish` keeps being called."""
    if qos not in (0, 1, 2):
        raise FeedError(f"qos must be 0, 1 or 2, not {qos}")
    pacer = Pacer(rate)
    result = ReplayResult()
    pending: deque[mqtt.MQTTMessageInfo] = deque()
    t0 = time.monotonic()

    def settle(limit: int, deadline: float) -> None:
        # Oldest first: brokers acknowledge QoS 1 in order, so this waits no longer than needed.
        while len(pending) > limit:
            left = deadline - time.monotonic()
            if left <= 0 or not _wait_published(pending[0], left):
                return
            pending.popleft()
            result.acknowledged += 1

    previous = client.on_publish

    def on_publish(
        c: mqtt.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        # An MQTT v5 PUBACK can refuse a message (e.g. "Not authorized" by the broker's ACL).
        if getattr(reason, "is_failure", False):
            result.rejected[str(reason)] = result.rejected.get(str(reason), 0) + 1
        if previous is not None:
            previous(c, userdata, mid, reason, props)

    client.on_publish = on_publish
    try:
        for index, bar in enumerate(bars):
            pacer.wait(index, stop)
            if stop is not None and stop.is_set():
                result.stopped = True
                break
            if result.rejected:
                break  # refusals come from the account's permissions: the rest would fail too
            topic, source, ts, label = _addressed(bar, topics)
            info = client.publish(topic, bar.model_dump_json(), qos=qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and result.rejected:
                break  # the broker closed the connection after refusing a bar
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # The agent drops bars it has seen (by seq) and releases it holds, so rerunning a
                # replay is safe.
                raise FeedError(
                    f"publishing {label} failed after {result.published} messages: "
                    f"{mqtt.error_string(info.rc)}; rerun the replay to resend"
                )
            if on_sent is not None:
                on_sent(bar, time.monotonic())
            pending.append(info)
            result.published += 1
            result.per_symbol[source] = result.per_symbol.get(source, 0) + 1
            result.first_ts = result.first_ts or ts
            result.last_ts = ts
            if len(pending) > max_pending:
                settle(max_pending, time.monotonic() + ack_timeout)
                if len(pending) > max_pending:
                    raise FeedError(f"the broker acknowledged nothing for {ack_timeout:g} s")
        if not result.rejected:
            settle(0, time.monotonic() + ack_timeout)
    finally:
        client.on_publish = previous
    result.elapsed_s = time.monotonic() - t0
    logger.info(
        "replayed %d bars of %d symbols in %.1f s; %d acknowledged",
        result.published,
        len(result.per_symbol),
        result.elapsed_s,
        result.acknowledged,
    )
    return result


def _wait_published(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError):  # paho: the message was dropped (queue full, disconnect)
        return False
    return info.is_published()
