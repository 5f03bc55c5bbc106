"""Bar sources and pacing: real shipped data and CSV files, time order, seq, one-line errors."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import arch.data.nasdaq
import arch.data.sp500
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.errors import DataError, FeedError
from forecaster.ops.feeds import Pacer, copy_bars, csv_bars, dataset_bars, interleave
from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
NASDAQ_CSV = ROOT / "models" / "data" / "nasdaq_close.csv"


def test_sp500_bars_are_the_shipped_ohlcv_in_time_order_with_seq() -> None:
    bars = dataset_bars("sp500", start=date(2016, 1, 1), end=date(2016, 3, 31), seq_start=7)
    frame = arch.data.sp500.load().loc["2016-01-01":"2016-03-31"]
    assert len(bars) == len(frame) > 50
    assert {b.symbol for b in bars} == {"SPX"}
    assert [b.seq for b in bars] == list(range(7, 7 + len(bars)))
    assert all(a.ts < b.ts for a, b in itertools.pairwise(bars))
    assert bars[0].ts == datetime(2016, 1, 4, tzinfo=UTC)
    np.testing.assert_allclose([b.close for b in bars], frame["Close"].to_numpy())
    np.testing.assert_allclose([b.high for b in bars], frame["High"].to_numpy())
    np.testing.assert_allclose([b.volume for b in bars], frame["Volume"].to_numpy())


def test_nasdaq_defaults_to_ndx_and_limit_counts_bars() -> None:
    bars = dataset_bars("nasdaq", limit=10)
    assert [b.symbol for b in bars] == ["NDX"] * 10
    assert bars[0].close == pytest.approx(arch.data.nasdaq.load()["Close"].iloc[0])


def test_close_only_datasets_replay_as_flat_bars() -> None:
    from forecaster.data.loaders import load_close_dataset

    bars = dataset_bars("wti", limit=5, seq_start=2)
    closes = load_close_dataset("wti").iloc[:5]
    assert [b.symbol for b in bars] == ["WTI"] * 5 and [b.seq for b in bars] == [2, 3, 4, 5, 6]
    assert [b.close for b in bars] == pytest.approx(closes.tolist())
    assert all(b.open == b.high == b.low == b.close and b.volume == 0 for b in bars)
    assert [b.ts.date() for b in bars] == [d.date() for d in closes.index]


def test_unknown_dataset_and_empty_period_are_one_line_errors() -> None:
    with pytest.raises(DataError, match="unknown dataset 'dow'; choose one of sp500, nasdaq, cac"):
        dataset_bars("dow")
    with pytest.raises(FeedError, match="no bars between 2030-01-01"):
        dataset_bars("sp500", start=date(2030, 1, 1))


def test_close_only_csv_fills_ohlc_with_the_close_and_volume_zero() -> None:
    bars = csv_bars(NASDAQ_CSV, start=date(2010, 1, 1), limit=20)
    frame = pd.read_csv(NASDAQ_CSV, parse_dates=["date"]).set_index("date").loc["2010-01-01":]
    assert {b.symbol for b in bars} == {"nasdaq_close"}
    assert all(b.open == b.high == b.low == b.close and b.volume == 0 for b in bars)
    np.testing.assert_allclose([b.close for b in bars], frame["close"].iloc[:20].to_numpy())
    assert [b.seq for b in bars] == list(range(20))


def test_ohlcv_csv_round_trips_the_dataset(tmp_path: Path) -> None:
    expected = dataset_bars("sp500", start=date(2018, 6, 1), limit=30, seq_start=3)
    frame = arch.data.sp500.load().loc["2018-06-01":].iloc[:30]
    path = tmp_path / "spx.csv"
    frame.drop(columns="Adj Close").rename_axis("Date").to_csv(path)  # capitalized headers
    bars = csv_bars(path, "SPX", seq_start=3)
    assert [b.model_dump() for b in bars] == [b.model_dump() for b in expected]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("date,price\n2020-01-01,1\n", "no column 'close'"),
        ("date,close\n2020-01-01,1\n2020-01-02,abc\n", "column 'close' row 3 is not a number"),
        ("date,close\n2020-01-02,1\n2020-01-01,2\n", "not in increasing order"),
        ("date,close\n2020-01-01,1\n2020-01-01,2\n", "duplicate date 2020-01-01"),
        ("date,close\n2020-01-01,1\n2020-01-02,-2\n", "non-positive price on 2020-01-02"),
        ("date,close\nsoon,1\n", "not dates"),
        ("date,close\n2020-01-01,1\n,2\n", "column 'date' row 3 has no date"),
        ("date,close,open\n2020-01-01,1,0\n", "2020-01-01: invalid bar: open"),
        ("date,close,volume\n2020-01-01,1,\n", "column 'volume' row 2 is not a number"),
        ("", "cannot read CSV"),
    ],
)
def test_bad_csv_is_a_one_line_data_error(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        csv_bars(path)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_csv_and_topic_unsafe_symbol_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        csv_bars(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="invalid bar: symbol"):
        csv_bars(NASDAQ_CSV, "NDX/1", limit=3)


closes = st.lists(
    st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(
    values=closes,
    gaps=st.lists(st.integers(1, 5), min_size=40, max_size=40),
    seq0=st.integers(0, 10**6),
)
def test_csv_parser_keeps_every_row_in_order(
    tmp_path_factory: pytest.TempPathFactory, values: list[float], gaps: list[int], seq0: int
) -> None:
    days = np.cumsum(gaps[: len(values)])
    dates = [date(2000, 1, 1) + timedelta(days=int(d)) for d in days]
    path = tmp_path_factory.mktemp("csv") / "x.csv"
    pd.DataFrame({"date": dates, "close": values}).to_csv(path, index=False)
    bars = csv_bars(path, "X", seq_start=seq0)
    assert [b.seq for b in bars] == list(range(seq0, seq0 + len(values)))
    assert [b.ts.date() for b in bars] == dates
    np.testing.assert_allclose([b.close for b in bars], values, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(order=st.permutations(list(range(6))))
def test_csv_parser_rejects_any_unsorted_file(
    tmp_path_factory: pytest.TempPathFactory, order: list[int]
) -> None:
    path = tmp_path_factory.mktemp("csv") / "x.csv"
    dates = [date(2020, 1, 1) + timedelta(days=i) for i in order]
    pd.DataFrame({"date": dates, "close": np.arange(1.0, 7.0)}).to_csv(path, index=False)
    if order == sorted(order):
        assert len(csv_bars(path)) == 6
    else:
        with pytest.raises(DataError, match="not in increasing order"):
            csv_bars(path)


def test_interleave_merges_symbols_in_date_order_keeping_each_sequence() -> None:
    spx = dataset_bars("sp500", start=date(2017, 1, 1), limit=40)
    ndx = dataset_bars("nasdaq", start=date(2017, 1, 15), limit=40)
    merged = list(interleave([spx, ndx]))
    assert len(merged) == 80
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(merged))
    for symbol, source in (("SPX", spx), ("NDX", ndx)):
        assert [b for b in merged if b.symbol == symbol] == source
    # On the same date the sources keep the order they were given in.
    same_day = [b.symbol for b in merged if b.ts == ndx[0].ts]
    assert same_day == ["SPX", "NDX"]


def test_copies_rename_one_symbol_into_many() -> None:
    bars = dataset_bars("sp500", limit=5)
    copies = copy_bars(bars, 12)
    assert [c[0].symbol for c in copies] == [f"SPX{i:02d}" for i in range(12)]
    assert all([b.close for b in c] == [b.close for b in bars] for c in copies)
    assert all([b.seq for b in c] == [b.seq for b in bars] for c in copies)
    with pytest.raises(FeedError):
        copy_bars(bars, 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=5000.0),
    work=st.lists(st.floats(min_value=0.0, max_value=0.01), min_size=1, max_size=200),
)
def test_pacer_follows_the_schedule_without_drift(rate: float, work: list[float]) -> None:
    """Publish i happens at start + i/rate, or right after publish i-1 when that ran late: the
    time spent sending never accumulates into the schedule."""
    clock = FakeClock()
    pacer = Pacer(rate, clock=clock, sleep=clock.sleep)
    sent = []
    for i, cost in enumerate(work):
        pacer.wait(i)
        sent.append(clock.now)
        clock.now += cost * (2.0 / rate) * 50  # sometimes slower than the interval
    start = sent[0]
    for i in range(1, len(sent)):
        due = start + i / rate
        expected = max(due, sent[i - 1] + work[i - 1] * (2.0 / rate) * 50)
        assert sent[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_pacer_rate_zero_never_waits_and_bad_rates_fail() -> None:
    clock = FakeClock()
    pacer = Pacer(0.0, clock=clock, sleep=clock.sleep)
    for i in range(1000):
        pacer.wait(i)
    assert clock.now == 100.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(FeedError, match="rate must be"):
            Pacer(bad)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--csv", "no/such/file.csv"], "CSV file no/such/file.csv does not exist"),
        ([], "nothing to replay"),
        (["--dataset", "sp500", "--symbols", "A,B"], "2 symbols for 1 sources"),
        (["--dataset", "sp500", "--dataset", "sp500"], "two sources share a symbol"),
        (["--dataset", "sp500", "--cert", "c.pem"], "--cert and --key go together"),
    ],
)
def test_cli_replay_bad_input_is_one_line_error(args: list[str], needle: str) -> None:
    result = run_cli("feed", "replay", *args, "--broker", "mqtt://127.0.0.1:9")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
