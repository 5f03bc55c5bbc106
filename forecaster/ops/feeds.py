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
from typing import TypeVar

import numpy as np
import paho.mqtt.client as mqtt
import pandas as pd
from pydantic import ValidationError

from device.bars import validation_reason
from device.mqtt import BrokerAddress
from device.schemas import Bar, MacroRelease
from device.topics import Topics
from forecaster.data.loaders import (
    CLOSE_DATASETS,
    DATASETS,
    load_close_dataset,
    load_dataset,
    read_dated_csv,
)
from forecaster.errors import DataError, FeedError
from forecaster.ops.mqtt import tool_client

__all__ = [
    "BarSources",
    "Pacer",
    "Publishing",
    "ReplayResult",
    "bars_from_frame",
    "check_delivery",
    "copy_bars",
    "csv_bars",
    "dataset_bars",
    "interleave",
    "load_sources",
    "publish_feed",
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
    """Daily bars of a shipped dataset: OHLCV from `arch` (`sp500` -> SPX, `nasdaq` -> NDX), or
    a close-only one (CLOSE_DATASETS: `wti`, `dax`, ...; open = high = low = close, volume 0)."""
    if name not in DATASETS and name not in CLOSE_DATASETS:
        names = ", ".join([*DATASETS, *CLOSE_DATASETS])
        raise DataError(f"unknown dataset {name!r}; choose one of {names}")
    if name in CLOSE_DATASETS:
        close = load_close_dataset(name)
        frame = pd.DataFrame(dict.fromkeys(("open", "high", "low", "close"), close))
        frame["volume"] = 0.0
        default = CLOSE_DATASETS[name].symbol
    else:
        frame = load_dataset(name).rename(columns=str.lower)
        default = DATASETS[name][1]
    return bars_from_frame(
        frame,
        symbol or default,
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
    out = {name: frame.get(name, close) for name in ("open", "high", "low")}
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
Item = TypeVar("Item", Bar, MacroRelease)


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


# At most this many messages in flight: enough to keep a link busy, few enough that a broker
# that stops acknowledging is noticed within `ack_timeout` instead of after the whole replay.
MAX_PENDING = 1000
# Mosquitto (2.0.x, eclipse-mosquitto#2579) drops a client that publishes where its ACL denies,
# sometimes after a PUBACK that refuses the message, sometimes before sending it (3 of 8 TLS
# replays on 2026-12-02): a failed publish waits this long for a refusal still on its way.
REFUSAL_GRACE_S = 2.0


class _Sender:
    """One replay's publishing state: the unacknowledged window and the ReplayResult."""

    def __init__(self, client: mqtt.Client, topics: Topics, qos: int) -> None:
        self.client, self.topics, self.qos = client, topics, qos
        self.result = ReplayResult()
        self.pending: deque[mqtt.MQTTMessageInfo] = deque()
        self.previous = client.on_publish
        self.refused = threading.Event()

    def on_publish(
        self, c: mqtt.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        # An MQTT v5 PUBACK can refuse a message (e.g. "Not authorized" by the broker's ACL).
        if getattr(reason, "is_failure", False):
            self.result.rejected[str(reason)] = self.result.rejected.get(str(reason), 0) + 1
            self.refused.set()
        if self.previous is not None:
            self.previous(c, userdata, mid, reason, props)  # type: ignore[call-arg, arg-type]

    def send(self, item: FeedItem) -> bool:
        """Publish one item; False when the broker refused (this or an earlier) message."""
        if self.result.rejected:
            return False  # refusals come from the account's permissions: the rest would fail too
        topic, source, ts, label = _addressed(item, self.topics)
        info = self.client.publish(topic, item.model_dump_json(), qos=self.qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            if self.pending and self.refused.wait(REFUSAL_GRACE_S):
                return False  # the broker closed the connection after refusing a message
            if self.pending and not any(p.is_published() for p in self.pending):
                raise FeedError(
                    f"the broker closed the connection after {self.result.published} messages "
                    f"without acknowledging any; check that this account may publish on {topic}"
                )
            # The agent drops bars it has seen (by seq) and releases it holds, so rerunning a
            # replay is safe.
            raise FeedError(
                f"publishing {label} failed after {self.result.published} messages: "
                f"{mqtt.error_string(info.rc)}; rerun the replay to resend"
            )
        self.pending.append(info)
        result = self.result
        result.published += 1
        result.per_symbol[source] = result.per_symbol.get(source, 0) + 1
        result.first_ts = result.first_ts or ts
        result.last_ts = ts
        return True

    def settle(self, limit: int, timeout: float) -> bool:
        """Wait up to `timeout` until at most `limit` messages are unacknowledged; True if so."""
        deadline = time.monotonic() + timeout
        # Oldest first: brokers acknowledge QoS 1 in order, so this waits no longer than needed.
        while len(self.pending) > limit:
            left = deadline - time.monotonic()
            if left <= 0 or not _wait_published(self.pending[0], left):
                return False
            self.pending.popleft()
            self.result.acknowledged += 1
        return True


def replay(
    bars: Iterable[Item],
    client: mqtt.Client,
    rate: float,
    topics: Topics,
    qos: int = 1,
    *,
    ack_timeout: float = 30.0,
    stop: threading.Event | None = None,
    on_sent: Callable[[Item, float], None] | None = None,
) -> ReplayResult:
    """Publish `bars` in order on `market/<symbol>/bar` (macro releases on `macro/<series>`,
    counted per series), `rate` per second (0: as fast as the broker acknowledges), with at most
    MAX_PENDING unacknowledged; then wait up to `ack_timeout` seconds for the rest.
    `on_sent(item, monotonic_time)` is called after each publish. The client's own `on_publish`
    keeps being called."""
    if qos not in (0, 1, 2):
        raise FeedError(f"qos must be 0, 1 or 2, not {qos}")
    pacer = Pacer(rate)
    sender = _Sender(client, topics, qos)
    t0 = time.monotonic()
    client.on_publish = sender.on_publish
    try:
        for index, item in enumerate(bars):
            pacer.wait(index, stop)
            if stop is not None and stop.is_set():
                sender.result.stopped = True
                break
            if not sender.send(item):
                break
            if on_sent is not None:
                on_sent(item, time.monotonic())
            if not sender.settle(MAX_PENDING, ack_timeout):
                raise FeedError(f"the broker acknowledged nothing for {ack_timeout:g} s")
        if not sender.result.rejected:
            sender.settle(0, ack_timeout)
    finally:
        client.on_publish = sender.previous
    result = sender.result
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


@dataclass(frozen=True)
class BarSources:
    """What `forecaster feed replay` publishes: shipped datasets, then CSV files, each under its
    symbol (`symbols`: one per source, or none for the defaults) and `copies` times; the period
    and first seq apply to each source."""

    datasets: Sequence[str] = ()
    csvs: Sequence[Path] = ()
    symbols: Sequence[str] = ()
    copies: int = 1
    start: date | None = None
    end: date | None = None
    limit: int | None = None
    seq_start: int = 0
    date_column: str = "date"
    close_column: str = "close"


def _source_bars(
    sources: BarSources, kind: str, source: str | Path, symbol: str | None
) -> list[Bar]:
    if kind == "dataset":
        return dataset_bars(
            str(source),
            symbol,
            start=sources.start,
            end=sources.end,
            limit=sources.limit,
            seq_start=sources.seq_start,
        )
    return csv_bars(
        Path(source),
        symbol,
        date_column=sources.date_column,
        close_column=sources.close_column,
        start=sources.start,
        end=sources.end,
        limit=sources.limit,
        seq_start=sources.seq_start,
    )


def load_sources(sources: BarSources) -> list[list[Bar]]:
    """Each source's bars (copied `copies` times); FeedError when there is nothing to replay, the
    symbols do not match the sources, or two series would share a symbol."""
    named: list[tuple[str, str | Path]] = [("dataset", d) for d in sources.datasets]
    named += [("csv", p) for p in sources.csvs]
    if not named:
        raise FeedError("nothing to replay: pass --dataset sp500|nasdaq or --csv PATH")
    if sources.symbols and len(sources.symbols) != len(named):
        raise FeedError(
            f"{len(sources.symbols)} symbols for {len(named)} sources; "
            "give one per --dataset / --csv"
        )
    series: list[list[Bar]] = []
    for i, (kind, source) in enumerate(named):
        bars = _source_bars(sources, kind, source, sources.symbols[i] if sources.symbols else None)
        series += copy_bars(bars, sources.copies) if sources.copies > 1 else [bars]
    symbols = [s[0].symbol for s in series]
    if len(set(symbols)) != len(symbols):
        raise FeedError(f"two sources share a symbol ({symbols}); name them with --symbol")
    return series


@dataclass(frozen=True)
class Publishing:
    """How a feed publishes: pace (items per second, 0 = as fast as acknowledged), QoS, how long
    to wait for acknowledgements, the topic prefix and the MQTT client id ("" = random)."""

    rate: float = 10.0
    qos: int = 1
    ack_timeout: float = 30.0
    prefix: str = ""
    client_id: str = ""


def publish_feed(
    items: Iterable[Item],
    address: BrokerAddress,
    publishing: Publishing,
    on_sent: Callable[[Item, float], None] | None = None,
) -> ReplayResult:
    """`replay` over a connection of its own."""
    with tool_client(address, publishing.client_id) as tool:
        return replay(
            items,
            tool.client,
            publishing.rate,
            Topics(publishing.prefix),
            publishing.qos,
            ack_timeout=publishing.ack_timeout,
            on_sent=on_sent,
        )


def check_delivery(result: ReplayResult, noun: str, topic: str, ack_timeout: float) -> None:
    """Fail, with what to check, when the broker refused or did not acknowledge a message."""
    if result.rejected:
        reasons = ", ".join(f"{n} x {why}" for why, n in result.rejected.items())
        raise FeedError(
            f"the broker refused {sum(result.rejected.values())} {noun}(s) ({reasons}); "
            f"check that this account may publish on {topic}"
        )
    if result.unacknowledged:
        raise FeedError(
            f"{result.unacknowledged} of {result.published} {noun}s were not acknowledged within "
            f"{ack_timeout:g} s"
        )
