"""`forecaster feed macro`'s source: the macro panel's releases in release order, chosen by
release date, as the `MacroRelease` payloads the agent validates."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from device.schemas import MacroRelease
from forecaster.errors import FeedError
from forecaster.ops.macro_feed import macro_releases


def test_releases_come_in_release_order_within_the_dates() -> None:
    releases = macro_releases(date(2008, 1, 1), date(2008, 12, 31))
    times = [r.released_at for r in releases]
    assert times == sorted(times)
    assert times[0] >= datetime(2008, 1, 1, tzinfo=UTC)
    assert times[-1] <= datetime(2008, 12, 31, 23, 59, 59, tzinfo=UTC)
    # the recipe's panel, less industrial production (its source ends in 2004-12)
    assert {r.series for r in releases} == {
        "core_cpi", "aaa", "baa", "baa_aaa_spread", "market_return", "wti", "sp500_return",
        "sp500_vol", "real_pce", "unemployment", "gdp",
    }  # fmt: skip
    # GDP of 2008Q3 came out on 28 October (advance estimate), CPI of November on 15 December
    gdp = {r.period: r.released_at for r in releases if r.series == "gdp"}
    assert gdp["2008Q3"] == datetime(2008, 10, 28, 12, 30, tzinfo=UTC)
    cpi = {r.period: r.released_at for r in releases if r.series == "core_cpi"}
    assert cpi["2008-11"] == datetime(2008, 12, 15, 12, 30, tzinfo=UTC)
    # the real-activity calendars: Employment Situation on the first Friday (5 December),
    # Personal Income and Outlays on the last day of the next month
    unemployment = {r.period: r.released_at for r in releases if r.series == "unemployment"}
    assert unemployment["2008-11"] == datetime(2008, 12, 5, 12, 30, tzinfo=UTC)
    pce = {r.period: r.released_at for r in releases if r.series == "real_pce"}
    assert pce["2008-10"] == datetime(2008, 11, 30, 12, 30, tzinfo=UTC)
    assert all(isinstance(r, MacroRelease) for r in releases)
    assert macro_releases(date(2008, 1, 1), date(2008, 12, 31), limit=5) == releases[:5]


def test_industrial_production_is_replayed_until_its_source_ends() -> None:
    releases = macro_releases(date(2004, 11, 1), date(2005, 3, 31))
    ip = [r for r in releases if r.series == "industrial_production"]
    assert [r.period for r in ip] == ["2004-10", "2004-11", "2004-12"]
    assert ip[-1].released_at == datetime(2005, 1, 15, 13, 15, tzinfo=UTC)
    # every series interleaved in release order, ties in the manifest's series order
    keys = [(r.released_at, r.series) for r in releases]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)


@pytest.mark.parametrize(
    ("start", "end", "limit", "message"),
    [
        (date(2020, 1, 1), None, None, "no macro releases between 2020-01-01"),
        (date(2008, 2, 1), date(2008, 1, 1), None, "before --start"),
        (None, None, 0, "at least 1"),
    ],
)
def test_bad_choices_are_one_line_errors(start, end, limit, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        macro_releases(start, end, limit)
