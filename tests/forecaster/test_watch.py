"""The live view's state (dedup, validation, latest per symbol) and its rendering; the demo's
scoring of forecast bands against the bars that were replayed."""

from __future__ import annotations

import io
import math
from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from device.schemas import AgentStatus, Bar, ModelRef, PriceForecast, TrendForecast, utcnow
from device.topics import Topics, forecast_key
from forecaster.ops.demo import band_coverage, print_summary, summarize
from forecaster.ops.feeds import dataset_bars
from forecaster.ops.watch import ForecastBoard, render_board

QUANTILES = [0.05, 0.1, 0.5, 0.9, 0.95]
HORIZONS = [1, 5]
REF = ModelRef(name="spx", version="20250101T000000000000Z", sha256="ab" * 32)


def price_forecast(bar: Bar, width: float = 0.02, agent: str = "a1") -> PriceForecast:
    """A forecast around a real close: symmetric log-return quantiles widening with the horizon."""
    z = np.array([-1.645, -1.2816, 0.0, 1.2816, 1.645])
    returns = [list(z * width * math.sqrt(h)) for h in HORIZONS]
    return PriceForecast(
        key=forecast_key(agent, bar.symbol, bar.seq, "price/spx"),
        agent=agent,
        symbol=bar.symbol,
        model=REF,
        ts=bar.ts,
        seq=bar.seq,
        last_close=bar.close,
        horizons=HORIZONS,
        quantiles=QUANTILES,
        returns=returns,
        prices=[[bar.close * math.exp(r) for r in row] for row in returns],
        latency_ms=0.25,
    )


def trend_forecast(bar: Bar) -> TrendForecast:
    return TrendForecast(
        key=forecast_key("a1", bar.symbol, bar.seq, "trend/spx"),
        agent="a1",
        symbol=bar.symbol,
        model=REF.model_copy(update={"name": "spx-trend"}),
        ts=bar.ts,
        seq=bar.seq,
        classes=["bear", "sideways", "bull"],
        proba=[0.1, 0.2, 0.7],
        latency_ms=0.1,
    )


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    return dataset_bars("sp500", start=date(2016, 1, 1), limit=60)


def test_board_keeps_the_latest_per_symbol_and_drops_redeliveries(bars: list[Bar]) -> None:
    topics = Topics()
    board = ForecastBoard(topics, history=100)
    for bar in bars[:3]:
        payload = price_forecast(bar).model_dump_json().encode()
        assert board.add(topics.price_forecast("SPX"), payload) is not None
        assert board.add(topics.price_forecast("SPX"), payload) is None  # QoS 1 redelivery
    assert board.add(
        topics.trend_forecast("SPX"), trend_forecast(bars[2]).model_dump_json().encode()
    )
    assert (board.received, board.duplicates) == (4, 3)
    assert board.price[("SPX", "spx")].forecast.seq == bars[2].seq
    assert [r.forecast.seq for r in board.price_history()] == [b.seq for b in bars[:3]]


@settings(max_examples=50, deadline=None)
@given(order=st.permutations(range(8)))
def test_the_board_shows_the_newest_bar_whatever_the_arrival_order(
    bars: list[Bar], order: list[int]
) -> None:
    # An agent restarted during a catch-up sends new forecasts ahead of its older backlog.
    topics = Topics()
    board = ForecastBoard(topics, history=100)
    for i in order:
        board.add(topics.price_forecast("SPX"), price_forecast(bars[i]).model_dump_json().encode())
        board.add(topics.trend_forecast("SPX"), trend_forecast(bars[i]).model_dump_json().encode())
        newest = max(bars[j].seq for j in order[: order.index(i) + 1])
        assert board.price[("SPX", "spx")].forecast.seq == newest
        assert board.trend[("SPX", "spx-trend")].forecast.seq == newest
    assert len(board.price_history()) == len(order)  # every forecast is kept for scoring


def test_board_counts_invalid_messages_and_reads_statuses() -> None:
    board = ForecastBoard(Topics("site1/"))
    assert board.add("site1/forecast/price/SPX", b"{not json") is None
    assert board.add("site1/forecast/price/SPX", b'{"key": "x"}') is None
    assert board.add("site1/forecast/other/SPX", b"{}") is None
    status = AgentStatus(agent="a1", online=True, models=[{"id": "price/spx"}], uptime_s=12)
    assert board.add("site1/fleet/a1/status", status.model_dump_json().encode()) is None
    assert board.invalid == 3
    assert board.received == 0
    assert board.statuses["a1"].online


def test_seen_keys_are_bounded_yet_recent_duplicates_are_dropped(bars: list[Bar]) -> None:
    board = ForecastBoard(seen=10)
    payloads = [price_forecast(b).model_dump_json().encode() for b in bars[:30]]
    for p in payloads:
        board.add("forecast/price/SPX", p)
    board.add("forecast/price/SPX", payloads[-1])
    assert (board.received, board.duplicates) == (30, 1)
    assert len(board._seen) == 10


def test_render_shows_price_band_trend_and_agents(bars: list[Bar]) -> None:
    board = ForecastBoard()
    bar = bars[-1]
    forecast = price_forecast(bar)
    board.add("forecast/price/SPX", forecast.model_dump_json().encode())
    board.add("forecast/trend/SPX", trend_forecast(bar).model_dump_json().encode())
    board.add(
        "forecast/trend/NDX",
        trend_forecast(bar.model_copy(update={"symbol": "NDX"})).model_dump_json().encode(),
    )
    status = AgentStatus(agent="kiosk-1", online=False, models=[{"id": "price/spx"}])
    board.add("fleet/kiosk-1/status", status.model_dump_json().encode())
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(
        render_board(board, now=forecast.produced_at + timedelta(seconds=3))
    )
    text = out.getvalue()
    median, low, high = forecast.prices[1][2], forecast.prices[1][0], forecast.prices[1][4]
    assert f"{median:,.0f}" in text
    assert f"{low:,.0f}–{high:,.0f}" in text
    assert f"{bar.close:,.0f}" in text
    assert "+1d" in text and "+5d" in text
    assert "bull 70%" in text
    assert "NDX" in text  # a symbol with a trend model only still gets a row
    assert "3.0 s" in text
    assert "kiosk-1 offline" in text
    assert "5%–95% band" in text


def test_render_of_an_empty_board_says_it_waits() -> None:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(render_board(ForecastBoard(), utcnow()))
    assert "waiting for forecasts" in out.getvalue()


def test_band_coverage_scores_only_elapsed_horizons(bars: list[Bar]) -> None:
    closes = {(b.symbol, b.seq): b.close for b in bars}
    last = bars[-1].seq
    forecasts = [price_forecast(b) for b in bars]
    result = {(c.horizon, c.nominal): c for c in band_coverage(forecasts, closes)}
    assert set(result) == {(1, 0.8), (1, 0.9), (5, 0.8), (5, 0.9)}
    assert result[(1, 0.9)].scored == sum(1 for b in bars if b.seq + 1 <= last)
    assert result[(5, 0.9)].scored == sum(1 for b in bars if b.seq + 5 <= last)
    # Nested bands: the wider one covers at least as often.
    assert result[(5, 0.9)].inside >= result[(5, 0.8)].inside


def test_band_coverage_counts_hits_against_the_realized_close(bars: list[Bar]) -> None:
    closes = {(b.symbol, b.seq): b.close for b in bars}
    wide = band_coverage([price_forecast(b, width=1.0) for b in bars], closes)
    assert all(c.rate == 1.0 for c in wide)
    narrow = band_coverage([price_forecast(b, width=1e-9) for b in bars], closes)
    assert all(c.rate == 0.0 for c in narrow)
    # Hand count for one horizon of ordinary width.
    forecasts = [price_forecast(b) for b in bars]
    got = next(c for c in band_coverage(forecasts, closes) if (c.horizon, c.nominal) == (5, 0.8))
    expected = sum(
        f.prices[1][1] <= closes[("SPX", f.seq + 5)] <= f.prices[1][3]
        for f in forecasts
        if ("SPX", f.seq + 5) in closes
    )
    assert got.inside == expected


@settings(max_examples=50, deadline=None)
@given(width=st.floats(min_value=1e-4, max_value=0.2), n=st.integers(1, 59))
def test_band_coverage_is_a_rate_over_scored_forecasts(
    bars: list[Bar], width: float, n: int
) -> None:
    closes = {(b.symbol, b.seq): b.close for b in bars[:n]}
    for c in band_coverage([price_forecast(b, width) for b in bars[:n]], closes):
        assert 0 <= c.inside <= c.scored
        assert c.scored == max(0, n - c.horizon)


def test_summary_scores_each_model_on_replayed_bars_only(bars: list[Bar]) -> None:
    board = ForecastBoard(history=1000)
    sent_at = {}
    for i, bar in enumerate(bars[:30]):  # 60 bars exist, 30 were replayed so far
        sent_at[(bar.symbol, bar.seq)] = float(i)
        for name in ("spx", "ndx"):
            f = price_forecast(bar).model_copy(
                update={"model": REF.model_copy(update={"name": name}), "key": f"{name}/{i}"}
            )
            board.add("forecast/price/SPX", f.model_dump_json().encode(), at=i + 0.004)
    summary = summarize(board, bars, sent_at)
    assert (summary.bars_sent, summary.price_forecasts, summary.trend_forecasts) == (30, 60, 0)
    assert set(summary.coverage) == {"spx", "ndx"}
    scored = {(c.horizon, c.nominal): c.scored for c in summary.coverage["spx"]}
    assert scored == {(1, 0.8): 29, (1, 0.9): 29, (5, 0.8): 25, (5, 0.9): 25}
    assert summary.end_to_end_ms == pytest.approx((4.0, 4.0))
    assert summary.model_latency_ms == pytest.approx((0.25, 0.25))
    out = io.StringIO()
    print_summary(summary, Console(file=out, width=120, color_system=None))
    text = out.getvalue()
    assert "forecasts received: 60 price, 0 trend" in text
    assert "bar -> forecast end to end: p50 4.00 ms, p99 4.00 ms" in text


def test_watch_and_fleet_status_show_the_live_accuracy_of_the_bands(bars: list[Bar]) -> None:
    from device.schemas import LiveAccuracy
    from forecaster.ops.fleet import accuracy_table

    forecast = price_forecast(bars[-1])
    acc = LiveAccuracy(
        model=f"price/spx@{REF.version}",
        symbol="SPX",
        window=250,
        scored=500,
        pinball=0.0041,
        coverage={"80": 0.78, "90": 0.83},
    )
    other = acc.model_copy(update={"symbol": "NDX", "coverage": {"80": 0.5, "90": 0.6}})
    status = AgentStatus(agent="a1", online=True, accuracy=[other, acc])
    board = ForecastBoard()
    board.add("fleet/a1/status", status.model_dump_json().encode())
    board.add("forecast/price/SPX", forecast.model_dump_json().encode())
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render_board(board))
    text = out.getvalue()
    assert "80% band: 78%" in text and "90% band: 83%" in text
    assert "of the last 250" in text  # 500 scored over the forecast's 2 horizons
    assert "50%" not in text  # NDX's numbers are not SPX's

    table = accuracy_table({"a1": status})
    assert table is not None
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    rows = [line for line in out.getvalue().splitlines() if "price/spx@" in line]
    assert len(rows) == 2
    assert any("SPX" in r and "78%" in r and "83%" in r and "0.004100" in r for r in rows)
    assert accuracy_table({"a1": AgentStatus(agent="a1", online=True)}) is None
