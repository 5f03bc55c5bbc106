"""GDP nowcast, cloud side: panel transformations, the release calendar, the DFM teacher,
baselines, the student's ONNX graph with NaNs, and a quick recipe into a verified bundle."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from arch.data import default, frenchdata, sp500
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from statsmodels.datasets import macrodata

from device.bundle import load_bundle
from device.runtime import OnnxModel
from device.schemas import MacroRelease
from forecaster.data.macro import (
    SERIES,
    MacroPanel,
    information_cut,
    load_macro_panel,
    release_stream,
)
from forecaster.errors import DataError, RecipeError
from forecaster.recipe import load_recipe
from forecaster.tasks.gdp import gdp_section, train_gdp
from forecaster.tasks.gdp.news import StudentNews, new_values, with_values
from forecaster.tasks.gdp.report import print_gdp_report
from forecaster.tasks.gdp.student import (
    NowcastStudent,
    SimulationPolicy,
    export_student,
    simulate_info_sets,
    stack_inputs,
)
from forecaster.tasks.gdp.teacher import DfmSpec, DfmTeacher, ar1_nowcast, dm_test, known_gdp
from forecaster.training.bundles import trusted_keys_for
from tests.support.gdp import WQ

RECIPE = Path(__file__).resolve().parents[2] / "models" / "gdp" / "us.toml"


@pytest.fixture(scope="module")
def panel() -> MacroPanel:
    return load_macro_panel(date(1985, 1, 1))


# ---------------------------------------------------------------- panel transformations


def test_spread_is_baa_minus_aaa(panel: MacroPanel) -> None:
    raw = default.load()
    month = pd.Timestamp("2008-12-01")
    expected = raw.loc[month, "BAA"] - raw.loc[month, "AAA"]
    assert panel.monthly.loc["2008-12", "baa_aaa_spread"] == pytest.approx(expected)
    assert panel.monthly.loc["2008-12", "aaa"] == pytest.approx(
        raw.loc[month, "AAA"] - raw.loc[pd.Timestamp("2008-11-01"), "AAA"]
    )


def test_gdp_growth_is_compounded_annual_rate(panel: MacroPanel) -> None:
    raw = macrodata.load_pandas().data
    q3 = raw[(raw.year == 2009) & (raw.quarter == 3)].realgdp.iloc[0]
    q2 = raw[(raw.year == 2009) & (raw.quarter == 2)].realgdp.iloc[0]
    assert panel.gdp[pd.Period("2009Q3", "Q")] == pytest.approx(100 * ((q3 / q2) ** 4 - 1))
    assert panel.gdp[pd.Period("2009Q3", "Q")] == pytest.approx(2.7829, abs=1e-4)
    assert panel.quarters[0] == pd.Period("1985Q1", "Q")


def test_market_aggregates_from_daily_and_french_data(panel: MacroPanel) -> None:
    close = sp500.load()["Close"]
    sep, octo = close.loc["2008-09"].iloc[-1], close.loc["2008-10"].iloc[-1]
    assert panel.monthly.loc["2008-10", "sp500_return"] == pytest.approx(100 * np.log(octo / sep))
    daily = np.log(close).diff().loc["2008-10"]
    assert panel.monthly.loc["2008-10", "sp500_vol"] == pytest.approx(
        100 * np.sqrt(252) * daily.std()
    )
    french = frenchdata.load()
    row = french.iloc[list(french.index.asi8).index(198501)]
    assert panel.monthly.loc["1985-01", "market_return"] == pytest.approx(row["Mkt-RF"] + row["RF"])
    # the S&P 500 series starts in 1999: earlier months are missing, not zero
    assert np.isnan(panel.monthly.loc["1998-12", "sp500_return"])


# ---------------------------------------------------------------- release calendar


def test_month_end_information_sets_have_the_ragged_edge(panel: MacroPanel) -> None:
    q = pd.Period("2005Q1", "Q")
    col = panel.series.index
    m1 = panel.info_set(q, information_cut(q, 1), WQ, 1)
    frame = pd.DataFrame(m1.monthly, index=m1.months, columns=panel.series)
    assert np.isfinite(frame.loc["2004-12", "core_cpi"])  # released Jan 15
    assert np.isnan(frame.loc["2005-01", "core_cpi"])  # released Feb 15
    assert np.isfinite(frame.loc["2005-01", "baa_aaa_spread"])  # market data: month end
    assert np.isnan(frame.loc["2005-02"]).all()
    assert np.isfinite(m1.gdp).all()  # 2004Q4 was released on Jan 28
    m3 = panel.info_set(q, information_cut(q, 3), WQ, 3)
    assert np.isfinite(m3.monthly[-2, col("core_cpi")])
    assert np.isnan(m3.monthly[-1, col("core_cpi")])
    assert np.isfinite(m3.monthly[-1, col("wti")])
    before_gdp = panel.info_set(q, pd.Timestamp("2005-01-27 23:00"), WQ)
    assert np.isnan(before_gdp.gdp[-1]) and np.isfinite(before_gdp.gdp[0])


def _released_ns(panel: MacroPanel, quarter: pd.Period) -> tuple[np.ndarray, np.ndarray]:
    months = pd.period_range(end=quarter.asfreq("M", "end"), periods=3 * WQ, freq="M")
    quarters = pd.period_range(end=quarter - 1, periods=WQ - 1, freq="Q")
    return (
        panel.monthly_released[panel.monthly.index.get_indexer(months)],
        panel.gdp_released[panel.gdp.index.get_indexer(quarters)],
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    quarter_offset=st.integers(min_value=4, max_value=98),
    cut_fraction=st.floats(min_value=0, max_value=1),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_information_sets_never_reveal_a_later_release(
    panel: MacroPanel, quarter_offset: int, cut_fraction: float, seed: int
) -> None:
    quarter = panel.quarters[0] + quarter_offset
    start, end = quarter.start_time.value, quarter.end_time.value
    cut = pd.Timestamp(int(start + cut_fraction * (end - start)))
    info = panel.info_set(quarter, cut, WQ)
    monthly_rel, gdp_rel = _released_ns(panel, quarter)
    stamp = np.datetime64(cut.to_datetime64(), "ns")
    visible, released = np.isfinite(info.monthly), monthly_rel <= stamp
    assert not (visible & ~released).any()
    # and nothing released (and existing) is hidden by the calendar itself
    exists = np.isfinite(panel.monthly.loc[info.months].to_numpy())
    assert (visible == (released & exists)).all()
    assert not (np.isfinite(info.gdp) & (gdp_rel > stamp)).any()
    # simulated sets only ever hide more
    rng = np.random.default_rng(seed)
    policy = SimulationPolicy(delay_prob=0.5, absent_prob=0.2, hole_prob=0.2, amplify_prob=0.5)
    mean = np.nanmean(panel.monthly.to_numpy(), axis=0)
    sims = simulate_info_sets(panel, pd.PeriodIndex([quarter]), 3, WQ, policy, rng, mean)
    for sim in sims:
        sim_stamp = np.datetime64(sim.cut.to_datetime64(), "ns")
        assert sim.quarter.start_time <= sim.cut <= sim.quarter.end_time
        assert not (np.isfinite(sim.monthly) & (monthly_rel > sim_stamp)).any()
        assert not (np.isfinite(sim.gdp) & (gdp_rel > sim_stamp)).any()


def test_release_stream_is_in_release_order_and_valid(panel: MacroPanel) -> None:
    start, end = pd.Timestamp("2008-01-01"), pd.Timestamp("2008-12-31 23:59")
    releases = list(release_stream(panel, start, end))
    times = [r["released_at"] for r in releases]
    assert times == sorted(times)
    assert all(pd.Timestamp(start, tz="UTC") <= t <= pd.Timestamp(end, tz="UTC") for t in times)
    parsed = [MacroRelease.model_validate(r) for r in releases]
    gdp = [r for r in parsed if r.series == "gdp"]
    assert [r.period for r in gdp] == ["2007Q4", "2008Q1", "2008Q2", "2008Q3"]
    assert gdp[-1].value == pytest.approx(panel.gdp[pd.Period("2008Q3", "Q")])
    cpi_dec = next(r for r in parsed if r.series == "core_cpi" and r.period == "2007-12")
    assert cpi_dec.released_at.date() == date(2008, 1, 15)
    # twelve releases of every series (CPI: December 2007 to November 2008) and four GDPs;
    # industrial production's source ends in 2004-12, so it has none
    assert "industrial_production" in panel.series
    assert not [r for r in parsed if r.series == "industrial_production"]
    assert len(parsed) == 12 * (len(panel.series) - 1) + 4


# ---------------------------------------------------------------- teacher and baselines


@pytest.fixture(scope="module")
def teacher(panel: MacroPanel) -> DfmTeacher:
    spec = DfmSpec(factors=1, factor_orders=1, maxiter=10)
    return DfmTeacher(spec, WQ).fit(panel, pd.Timestamp("2003-12-31 23:59"))


def test_dfm_nowcasts_are_finite_and_exact(panel: MacroPanel, teacher: DfmTeacher) -> None:
    quarters = pd.period_range("2008Q3", "2009Q1", freq="Q")
    infos = panel.calendar_info_sets(quarters, WQ)
    nowcasts = teacher.nowcasts(panel, infos)
    assert np.isfinite(nowcasts).all()
    # the cached-history shortcut gives the same number as filtering the whole sample
    assert teacher.nowcast_full_sample(panel, infos[4]) == pytest.approx(nowcasts[4], abs=1e-9)
    # more information moves the nowcast, and the news decomposition explains the move
    news = teacher.news(panel, infos[4], infos[5])
    assert news["updated"] - news["previous"] == pytest.approx(news["impact_of_news"], abs=1e-6)
    assert sum(news["impact_by_series"].values()) == pytest.approx(news["impact_of_news"], abs=1e-6)
    assert {r["series"] for r in news["releases"]} >= {"wti", "core_cpi"}


def test_ar1_recovers_an_exact_autoregression() -> None:
    quarters = pd.period_range("2000Q1", periods=12, freq="Q")
    y = [2.0]
    for _ in range(11):
        y.append(1.0 + 0.5 * y[-1])
    history = pd.Series(y, index=quarters)
    # two steps ahead: from the last known quarter, iterate the fitted AR(1) twice
    expected = 1.0 + 0.5 * (1.0 + 0.5 * y[-1])
    assert ar1_nowcast(history, quarters[-1] + 2) == pytest.approx(expected)


def test_baselines_only_use_released_gdp(panel: MacroPanel) -> None:
    q = pd.Period("2009Q1", "Q")
    assert known_gdp(panel, information_cut(q, 1)).index[-1] == q - 1
    assert known_gdp(panel, pd.Timestamp("2009-01-27")).index[-1] == q - 2


def test_dm_test_sign_and_degenerate_case() -> None:
    rng = np.random.default_rng(0)
    actual = rng.normal(size=40)
    good, bad = actual + 0.1 * rng.normal(size=40), actual + rng.normal(size=40)
    result = dm_test(actual, good, bad)
    assert result["statistic"] < 0 and result["pvalue"] < 0.01
    assert dm_test(actual, good, good)["pvalue"] is None


# ---------------------------------------------------------------- student graph


# (ONNX = torch for every student kind, any missing pattern: tests/forecaster/test_gdp_student.py)


# ---------------------------------------------------------------- recipe and bundle


def test_recipe_uses_the_chosen_panel_and_factor_blocks() -> None:
    section = gdp_section(load_recipe(RECIPE))
    assert section.series == [s.name for s in SERIES]
    assert section.series[-3:] == ["real_pce", "unemployment", "industrial_production"]
    assert section.teacher.score_without == ["industrial_production"]
    factors = section.teacher.candidates[0].factor_map(section.series)
    assert factors["real_pce"] == ["global", "real"]
    assert factors["wti"] == ["global", "financial"]
    assert factors["gdp"] == ["global", "real", "financial"]
    spec = DfmSpec(factors=factors, factor_orders=2)
    assert spec.label == "global+real+financial/var2"
    assert section.teacher.candidates[-1].factor_map(section.series) == 1


def test_gdp_section_errors_are_one_line(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPE)
    bad = recipe.model_copy(update={"gdp": {**(recipe.gdp or {}), "series": ["core_cpi", "gold"]}})
    with pytest.raises(RecipeError, match=r"gdp\.series") as err:
        gdp_section(bad)
    assert "\n" not in str(err.value)
    gdp = recipe.gdp or {}
    teacher = {**gdp["teacher"], "candidates": [{"blocks": {"real": ["real_pce", "gold"]}}]}
    with pytest.raises(RecipeError, match="not in \\[gdp\\] series") as err:
        gdp_section(recipe.model_copy(update={"gdp": {**gdp, "teacher": teacher}}))
    assert "\n" not in str(err.value)
    csv = recipe.model_copy(update={"data": recipe.data.model_copy(update={"source": "sp500"})})
    with pytest.raises(DataError, match="macrodata"):
        train_gdp(csv, tmp_path / "registry", None, quick=True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    registry = tmp_path_factory.mktemp("gdp") / "registry"
    return train_gdp(load_recipe(RECIPE).quickened(), registry, None, quick=True)


def test_quick_recipe_trains_a_verified_bundle(bundle: Path, panel: MacroPanel) -> None:
    registry = bundle.parents[2]
    loaded = load_bundle(bundle, trusted_keys_for(registry))
    m = loaded.manifest
    assert (m.task, m.name) == ("gdp", "us")
    assert m.series == panel.series
    assert [(i.name, i.shape) for i in m.inputs] == [
        ("monthly", ["batch", 9, len(panel.series)]),
        ("gdp", ["batch", 2]),
    ]
    assert [o.name for o in m.outputs] == ["nowcast", "band"]
    assert m.periods.test[1] == date(2009, 9, 30)
    assert not (bundle / "teacher.onnx").exists()
    for png in ("news.png", "nowcasts.png", "track.png"):
        assert (bundle / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((bundle / "report.json").read_text())
    assert "no ONNX form" in report["teacher"]["teacher_onnx"]
    assert report["student"]["parity"]["test_max_abs"] < 1e-4
    test = report["evaluation"]["test"]
    for model in ("teacher", "student", "ar1", "mean"):
        assert set(test["metrics"][model]) == {"month_1", "month_2", "month_3"}
    assert set(test["dm_vs_ar1"]) == {"teacher", "student", "mean"}
    assert report["teacher"]["candidates"][0]["scored_without"] == ["industrial_production"]
    news = report["news"]
    known = {*m.series, "gdp"}
    assert news["releases"] and set(news["impact_by_series"]) <= known
    # the student's attribution of the same m2 -> m3 releases sums to its own revision
    student = news["student"]
    assert {(r["series"], r["period"]) for r in student["releases"]} >= {
        (r["series"], r["period"]) for r in news["releases"] if r["series"] != "gdp"
    }
    total = sum(r["impact_pp"] for r in student["releases"])
    assert total == pytest.approx(student["updated"] - student["previous"], abs=1e-9)
    # the track: one point per release time inside the quarter, both decompositions per step
    tracks = report["tracks"]  # the recipe's track quarters, both in the quick test period
    assert [t["quarter"] for t in tracks] == ["2008Q4", "2009Q3"]
    assert tracks[-1]["actual"] == pytest.approx(2.7829, abs=1e-4)
    for track in tracks:
        times = [p["at"] for p in track["points"]]
        assert times == sorted(times) and len(track["steps"]) == len(times) - 1
        for step in track["steps"]:
            assert step["impacts"] and all(r["series"] in known for r in step["impacts"])
            own = sum(r["impact_pp"] for r in step["impacts"])
            assert own == pytest.approx(step["student_revision"], abs=1e-9)
    comparison = report["news_comparison"]
    assert comparison["steps"] == sum(len(t["steps"]) for t in tracks)
    assert comparison["student_sum_minus_revision_max_abs"] < 1e-9
    verdict = report["verdict"]
    assert isinstance(verdict["met"], bool) and verdict["text"]
    assert {"teacher_rmse_vs_ar1_m3", "student_dm_pvalue_m3", "band_coverage_m2"} <= set(
        verdict["criteria"]
    )
    coverage = test["band_coverage"]
    assert verdict["criteria"]["band_coverage_m1"]["met"] == (
        abs(coverage["month_1"] - 0.8) <= 0.1 + 1e-12
    )
    # the device runs the shipped graph on real information sets and gets the reported nowcasts
    model = OnnxModel(loaded)
    rows = report["nowcasts"]
    infos = [panel.info_set(pd.Period(r["quarter"], "Q"), pd.Timestamp(r["cut"]), WQ) for r in rows]
    monthly, gdp = stack_inputs(infos)
    outputs, _ = model.run({"monthly": monthly, "gdp": gdp})
    np.testing.assert_allclose(outputs["nowcast"], [r["student"] for r in rows], atol=1e-3)
    np.testing.assert_allclose(outputs["band"], [r["band"] for r in rows], atol=1e-3)


def test_report_prints_the_table_and_rewrites_the_charts(bundle: Path) -> None:
    report = json.loads((bundle / "report.json").read_text())
    (bundle / "news.png").unlink()
    out = io.StringIO()
    print_gdp_report(bundle, report, Console(file=out, width=200))
    text = out.getvalue()
    assert "RMSE m3" in text and "student" in text and "ar1" in text
    assert "coverage" in text and "news, student vs teacher" in text
    assert (bundle / "news.png").exists() and (bundle / "track.png").exists()


# ---------------------------------------------------------------- news attribution


def test_student_news_sums_to_the_revision_and_is_exact_for_an_additive_student(
    panel: MacroPanel,
) -> None:
    torch.manual_seed(1)
    monthly = panel.monthly.loc[:"2000-12"]
    stats = (monthly.mean().fillna(0).to_numpy(), monthly.std().fillna(1).to_numpy())
    gdp = (float(panel.gdp.mean()), float(panel.gdp.std()))
    linear = NowcastStudent(3 * WQ, WQ - 1, *stats, *gdp, [])
    explainer = StudentNews.of(export_student(linear))
    quarter = pd.Period("2008Q4", "Q")
    before = panel.info_set(quarter, information_cut(quarter, 1), WQ)
    after = panel.info_set(quarter, information_cut(quarter, 3), WQ)
    rows, previous, updated = explainer.impacts(panel, before, after)
    values = new_values(panel, before, after)
    # every new value once, in release order, the month-end market batches among them
    assert [(r["series"], r["period"]) for r in rows] == [(v.series, v.period) for v in values]
    assert [r["released_at"] for r in rows] == sorted(r["released_at"] for r in rows)
    assert len({r["released_at"] for r in rows}) < len(rows)
    assert sum(r["impact_pp"] for r in rows) == pytest.approx(updated - previous, abs=1e-9)
    # additive in its inputs: each impact is that value's own effect, whatever the order
    base = explainer.nowcasts([before])[0]
    for row, value in zip(rows, values, strict=True):
        alone = explainer.nowcasts([with_values(before, after, [value])])[0]
        assert row["impact_pp"] == pytest.approx(alone - base, abs=2e-5)
