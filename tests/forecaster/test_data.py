"""Data loaders, splits and windows: real series, one-line errors, no look-ahead."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.data import (
    CLOSE_DATASETS,
    TRAINING_DATASETS,
    load_close_dataset,
    load_close_series,
    load_csv_series,
    make_price_samples,
    split_index,
)
from forecaster.data.loaders import eustock_dates
from forecaster.errors import DataError
from forecaster.recipe import DataSection, SplitSection


@pytest.fixture(scope="module")
def spx() -> pd.Series:
    return load_close_series(DataSection(source="sp500", symbol="SPX"))


def test_sp500_loads_real_daily_closes(spx: pd.Series) -> None:
    assert spx.name == "SPX"
    assert spx.index[0] == pd.Timestamp("1999-01-04")
    assert len(spx) > 5000
    assert spx.index.is_monotonic_increasing
    assert (spx > 0).all()


def test_nasdaq_is_another_series() -> None:
    ndx = load_close_series(DataSection(source="nasdaq"))
    assert ndx.name == "NDX"
    assert len(ndx) > 1000


def test_eustock_dates_follow_r_ts_start() -> None:
    # R: tsp(EuStockMarkets) = (1991.4962, 1998.6462, 260); 1991 + 129/260 is the 130th
    # business day of 1991, and the 130th Monday-to-Friday day of 1991 is July 1.
    dates = eustock_dates(1860)
    assert dates[0] == pd.Timestamp("1991-07-01")
    assert dates[0] == pd.bdate_range("1991-01-01", periods=130)[-1]
    assert dates[-1] == pd.Timestamp("1998-08-14")
    assert (dates.day_of_week < 5).all()


def test_cac_and_smi_are_real_eustockmarkets_closes() -> None:
    cac = load_close_series(DataSection(source="cac"))
    smi = load_close_series(DataSection(source="smi", symbol="SWISS"))
    assert (cac.name, smi.name) == ("CAC", "SWISS")
    assert len(cac) == len(smi) == 1860
    # first rows of R's EuStockMarkets
    assert cac.iloc[:2].tolist() == [1772.8, 1750.5]
    assert smi.iloc[0] == 1678.1
    assert cac.index.equals(smi.index)


@pytest.mark.parametrize("name", sorted(CLOSE_DATASETS))
def test_every_close_dataset_is_a_valid_daily_series(name: str) -> None:
    series = load_close_dataset(name)
    assert series.name == CLOSE_DATASETS[name].symbol
    assert len(series) > 1500
    assert series.index.is_monotonic_increasing and series.index.is_unique
    assert (series > 0).all()
    gaps = np.diff(series.index.to_numpy()).astype("timedelta64[D]").astype(int)
    assert np.median(gaps) == 1  # daily, not monthly like arch.data.crude


def test_wti_drops_the_days_fred_leaves_empty() -> None:
    wti = load_close_dataset("wti")
    assert wti.index[0] == pd.Timestamp("1986-01-02") and wti.iloc[0] == 25.56
    assert np.isfinite(wti.to_numpy()).all()


def test_the_fx_and_crsp_series_keep_their_own_dates() -> None:
    gbp, ibm = load_close_dataset("gbp"), load_close_dataset("ibm")
    # Ecdat Garch's first row: 800102 (a Wednesday), 2.2490 dollars per pound
    assert gbp.index[0] == pd.Timestamp("1980-01-02") and gbp.iloc[0] == 2.2490
    assert gbp.index[-1] == pd.Timestamp("1987-05-21")
    # CRSPday: 1989-01-03's return is the first step of the index from 100
    assert ibm.index[0] == pd.Timestamp("1989-01-03") and ibm.index[-1] == pd.Timestamp(
        "1998-12-31"
    )
    assert ibm.iloc[0] == pytest.approx(100.0)  # IBM's first return is 0.0


def test_gold_eer_evir_and_markpound_keep_or_assign_their_dates() -> None:
    gold, silver = load_close_dataset("gold"), load_close_dataset("silver")
    assert gold.index.equals(silver.index) and len(gold) == 9132
    assert gold.index[0] == pd.Timestamp("1977-12-30") and gold.iloc[0] == 100.0
    assert gold.index[-1] == pd.Timestamp("2012-12-31")
    eeri = load_close_dataset("gbpeer")
    assert eeri.index[0] == pd.Timestamp("1990-01-02") and eeri.iloc[0] == 90.7445
    assert eeri.index[-1] == pd.Timestamp("2022-12-30")
    # evir: 6146 returns from Tuesday 1973-01-02 to Tuesday 1996-07-23, one per weekday
    bmw, siemens = load_close_dataset("bmw"), load_close_dataset("siemens")
    assert bmw.index.equals(siemens.index) and len(bmw) == 6146
    assert bmw.index[0] == pd.Timestamp("1973-01-02")
    assert bmw.index[-1] == pd.Timestamp("1996-07-23")
    assert (bmw.index.day_of_week < 5).all()
    assert bmw.iloc[0] == pytest.approx(100.0 * np.exp(0.047704), rel=1e-5)
    # MarkPound has no dates: the k-th return on the k-th weekday from 1984-01-03
    demgbp = load_close_dataset("demgbp")
    assert len(demgbp) == 1974 and demgbp.index[0] == pd.Timestamp("1984-01-03")
    assert demgbp.index[-1] == pd.Timestamp("1991-07-26")
    assert demgbp.iloc[0] == pytest.approx(100.0 * np.exp(0.00125333), rel=1e-5)


def test_new_evaluation_series_keep_their_own_dates() -> None:
    # AER MSCISwitzerland: a zoo with one row per Monday-to-Friday day, 1994-12-30 .. 2012-12-31
    msci = load_close_dataset("mscich")
    assert msci.name == "MSCICH" and len(msci) == 4697
    assert msci.index[0] == pd.Timestamp("1994-12-30") and msci.iloc[0] == 335.747
    assert msci.index[-1] == pd.Timestamp("2012-12-31")
    assert msci.index.equals(pd.bdate_range("1994-12-30", "2012-12-31"))
    # stevedata DJIA before 1980: trading days with their own dates, none in djia's years
    early = load_close_dataset("djia1885")
    assert early.name == "DJIA1885" and len(early) == 26864
    assert early.index[0] == pd.Timestamp("1885-02-16") and early.iloc[0] == 30.9226
    assert early.index[-1] == pd.Timestamp("1979-12-31")
    assert early.index[-1] < load_close_dataset("djia").index[0]


def test_training_list_is_the_four_named_series() -> None:
    assert set(TRAINING_DATASETS) == {"sp500", "nasdaq", "cac", "smi"}


def test_unknown_dataset_lists_the_choices() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'nope'.*cac.*wti.*'csv'"):
        load_close_series(DataSection(source="nope"))


def write_csv(path: Path, rows: list[tuple[str, object]]) -> Path:
    pd.DataFrame(rows, columns=["date", "close"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("2020-01-02", 1.0), ("2020-01-01", 2.0)], "not in increasing order"),
        ([("2020-01-01", 1.0), ("2020-01-01", 2.0)], "duplicate date"),
        ([("2020-01-01", 1.0), ("2020-01-02", "abc")], "is not a number"),
        ([("2020-01-01", 1.0), ("2020-01-02", -3.0)], "non-positive price"),
        ([("2020-01-01", 1.0), ("not a date", 2.0)], "not dates"),
    ],
)
def test_csv_errors_are_one_line(tmp_path: Path, rows: list, message: str) -> None:
    path = write_csv(tmp_path / "p.csv", rows)
    with pytest.raises(DataError, match=message) as info:
        load_csv_series(path, "date", "close")
    assert "\n" not in str(info.value)


def test_csv_missing_file_and_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_csv_series(tmp_path / "nope.csv", "date", "close")
    path = write_csv(tmp_path / "p.csv", [("2020-01-01", 1.0)])
    with pytest.raises(DataError, match="no column 'price'"):
        load_csv_series(path, "date", "price")


def test_split_date_outside_data_is_rejected(spx: pd.Series) -> None:
    split = SplitSection(train_end=date(2030, 1, 1), valid_end=date(2031, 1, 1))
    with pytest.raises(DataError, match="outside the data"):
        split_index(pd.DatetimeIndex(spx.index), split, 64, 20)


def test_too_few_rows_for_window(spx: pd.Series) -> None:
    short = spx.iloc[:200]
    split = SplitSection(train_end=date(1999, 3, 1), valid_end=date(1999, 6, 1))
    with pytest.raises(DataError, match=r"needs? at least"):
        split_index(pd.DatetimeIndex(short.index), split, 64, 20)


def test_targets_are_future_log_returns_and_windows_end_at_origin(spx: pd.Series) -> None:
    s = make_price_samples(spx, 100, 200, window=64, horizons=[1, 5])
    i = 10
    t = s.origins[i]
    np.testing.assert_allclose(s.x[i], spx.iloc[t - 63 : t + 1].to_numpy(), rtol=1e-6)
    expected = np.log(spx.iloc[t + 5] / spx.iloc[t])
    assert s.y[i, 1] == pytest.approx(expected, rel=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=64, max_value=4000), st.integers(min_value=1, max_value=30))
def test_windows_never_see_the_future(spx: pd.Series, origin: int, h: int) -> None:
    """Changing every close after the origin leaves the window (the model's input) unchanged."""
    s = make_price_samples(spx, origin, origin, window=64, horizons=[h])
    altered = spx.copy()
    altered.iloc[origin + 1 :] *= 2.0
    s2 = make_price_samples(altered, origin, origin, window=64, horizons=[h])
    np.testing.assert_array_equal(s.x, s2.x)
    assert s.y[0, 0] != pytest.approx(s2.y[0, 0])
