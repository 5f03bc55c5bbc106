"""The device's macro panel: the GDP student's input built on the device equals the cloud's
information set for the same releases, releases are classified (new, redelivery, revision, out
of order), bad ones are refused with a reason, and the panel is durable with the outbox commit."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.bundle import load_bundle
from device.errors import ModelError, PayloadError
from device.keys import load_trusted_keys
from device.outbox import Outbox, OutMessage
from device.panel import (
    Change,
    GdpLayout,
    ReleasedPanel,
    check_release,
    load_panel,
    panel_write,
    quarter_of,
)
from device.runtime import OnnxModel
from device.schemas import MacroRelease
from device.settings import NowcastSettings
from forecaster.data.macro import (
    SERIES,
    MacroPanel,
    information_cut,
    load_macro_panel,
    release_stream,
)
from forecaster.tasks.gdp.student import stack_inputs

WQ = 3  # the recipe's window_quarters: 9 months, 2 GDP lags
LAYOUT = GdpLayout(
    series=tuple(s.name for s in SERIES),
    months=3 * WQ,
    gdp_lags=WQ - 1,
    band_levels=(0.1, 0.9),
    region="us",
)
UTC_0 = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def panel() -> MacroPanel:
    return load_macro_panel(date(1985, 1, 1))


@pytest.fixture(scope="module")
def releases(panel: MacroPanel) -> list[MacroRelease]:
    """Every release of the recipe's panel, through JSON as on the wire."""
    return [
        MacroRelease.model_validate_json(MacroRelease.model_validate(r).model_dump_json())
        for r in release_stream(panel)
    ]


def device_panel(releases: list[MacroRelease]) -> ReleasedPanel:
    out = ReleasedPanel()
    for r in releases:
        assert out.apply(check_release(r, LAYOUT.known)) is Change.NEW
    return out


def cloud_inputs(panel: MacroPanel, quarter: pd.Period, cut: datetime) -> tuple[np.ndarray, ...]:
    cut_ts = pd.Timestamp(cut.astimezone(UTC).replace(tzinfo=None))
    return stack_inputs([panel.info_set(quarter, cut_ts, WQ)])


def assert_same(device: tuple[np.ndarray, ...], cloud: tuple[np.ndarray, ...]) -> None:
    for d, c in zip(device, cloud, strict=True):
        assert d.dtype == c.dtype == np.float32
        # identical values and identical NaNs, not merely close
        np.testing.assert_array_equal(d, c)


@settings(max_examples=40, deadline=None)
@given(fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_device_input_equals_the_cloud_information_set_in_any_delivery_order(
    panel: MacroPanel, releases: list[MacroRelease], fraction: float, seed: int
) -> None:
    # the first release whose quarter has a full window in the panel, the last one inside it
    first = next(
        i for i, r in enumerate(releases) if r.released_at >= datetime(1985, 7, 1, tzinfo=UTC)
    )
    last = max(
        i
        for i, r in enumerate(releases)
        if quarter_of(r.released_at) <= quarter_of(datetime(2009, 9, 30, tzinfo=UTC))
    )
    cut = releases[first + round(fraction * (last - first))].released_at
    seen = [r for r in releases if r.released_at <= cut]  # everything released at the cut too
    shuffled = random.Random(seed).sample(seen, len(seen))
    device = device_panel(shuffled)
    as_of = device.as_of
    assert as_of == max(r.released_at for r in seen)
    quarter = pd.Period(as_of.replace(tzinfo=None), "Q")
    assert_same(device.inputs(LAYOUT, quarter_of(as_of)), cloud_inputs(panel, quarter, as_of))


@pytest.mark.parametrize("quarter", ["1990Q3", "2001Q3", "2008Q4", "2009Q3"])
def test_calendar_information_sets_match_for_every_information_month(
    panel: MacroPanel, releases: list[MacroRelease], quarter: str
) -> None:
    q = pd.Period(quarter, "Q")
    for month in (1, 2, 3):
        cut = information_cut(q, month).to_pydatetime().replace(tzinfo=UTC)
        device = device_panel([r for r in releases if r.released_at <= cut])
        assert device.as_of is not None and quarter_of(device.as_of) == quarter_of(cut)
        assert_same(device.inputs(LAYOUT, quarter_of(device.as_of)), cloud_inputs(panel, q, cut))


def release(series: str, period: str, value: float, day: int = 0) -> MacroRelease:
    return MacroRelease(
        series=series, period=period, value=value, released_at=UTC_0 + timedelta(days=day)
    )


def test_redelivery_revision_and_out_of_order_release() -> None:
    p = ReleasedPanel()
    assert p.apply(release("aaa", "1999-12", 0.1, 0)) is Change.NEW
    assert p.apply(release("aaa", "1999-12", 0.1, 5)) is Change.SAME  # redelivery: kept as is
    assert p.get("aaa", "1999-12").released_at == UTC_0
    assert p.apply(release("aaa", "1999-12", 0.2, 3)) is Change.REVISION
    assert p.get("aaa", "1999-12").value == 0.2
    assert p.apply(release("aaa", "1999-12", 0.3, 1)) is Change.STALE  # older than the revision
    assert p.get("aaa", "1999-12").value == 0.2
    assert p.as_of == UTC_0 + timedelta(days=3)
    assert p.apply(release("gdp", "1999Q3", 5.0, 2)) is Change.NEW
    assert p.apply(release("aaa", "1998-01", 1.0, 4)) is Change.NEW
    assert (p.latest("aaa"), p.latest("gdp"), p.latest("wti"), len(p)) == (
        "1999-12",
        "1999Q3",
        None,
        3,
    )


@pytest.mark.parametrize(
    ("series", "period", "reason"),
    [
        ("gold", "1999-12", "unknown series 'gold'"),
        ("aaa", "1999Q4", "aaa is monthly"),
        ("gdp", "1999-12", "gdp is quarterly"),
        ("aaa", "2000-02", "before the period began"),
        ("gdp", "2000Q1", None),  # released on its first day: accepted
    ],
)
def test_bad_releases_are_refused_with_a_reason(
    series: str, period: str, reason: str | None
) -> None:
    r = release(series, period, 1.0)
    if reason is None:
        assert check_release(r, LAYOUT.known).released_at == UTC_0
        return
    with pytest.raises(PayloadError, match=reason):
        check_release(r, LAYOUT.known)


def test_naive_release_times_are_utc() -> None:
    r = MacroRelease(series="aaa", period="1999-12", value=1.0, released_at=datetime(2000, 1, 1))
    assert check_release(r, LAYOUT.known).released_at == UTC_0


def test_the_panel_is_stored_in_the_outbox_transaction(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, 1 << 20)
    assert len(load_panel(path)) == 0  # creates the table
    first, revised = release("aaa", "1999-12", 0.1, 0), release("aaa", "1999-12", 0.25, 3)
    outbox.commit([OutMessage("nowcast/gdp/us", b"{}", retain=True)], writes=[panel_write(first)])
    outbox.commit([], writes=[panel_write(revised), panel_write(release("gdp", "1999Q3", 4.0, 1))])

    def broken(cur: sqlite3.Cursor) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError):
        outbox.commit(
            [OutMessage("nowcast/gdp/us", b"{}")],
            writes=[panel_write(release("wti", "1999-12", 3.0)), broken],
        )
    outbox.close()
    stored = load_panel(path)
    assert (len(stored), stored.get("aaa", "1999-12").value, stored.latest("wti")) == (
        2,
        0.25,
        None,
    )
    assert stored.as_of == UTC_0 + timedelta(days=3)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1  # the rollback's gone


def test_the_gdp_bundle_layout_and_a_wrong_manifest(quick_bundles) -> None:
    gdp = quick_bundles["gdp"]
    bundle = load_bundle(gdp.path, load_trusted_keys([gdp.keys_dir]))
    assert GdpLayout.from_manifest(bundle.manifest) == LAYOUT
    wrong = bundle.manifest.model_copy(update={"series": ["aaa"]})
    with pytest.raises(ModelError, match="monthly"):
        GdpLayout.from_manifest(wrong)
    # the empty panel: every input NaN, still a finite nowcast (the smoke test)
    monthly, lags = ReleasedPanel().inputs(LAYOUT, quarter_of(UTC_0))
    outputs, _ = OnnxModel(bundle).run({"monthly": monthly, "gdp": lags})
    assert np.isnan(monthly).all() and np.isfinite(outputs["nowcast"]).all()


def test_cron_setting_is_validated() -> None:
    assert NowcastSettings().cron == "0 6 * * *"
    assert NowcastSettings(cron=" ").cron == ""
    with pytest.raises(ValueError, match="crontab"):
        NowcastSettings(cron="0 25 * * *")
