"""The GDP task end to end: macro panel with a release calendar -> DynamicFactorMQ teacher
(specification chosen on validation, re-estimated on an expanding window) -> student
(linear path plus pattern-set weights, or an MLP) distilled over simulated ragged-edge information sets -> ONNX -> pseudo-real-time evaluation
against AR(1) and the historical mean -> news decomposition -> signed bundle with charts."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import statsmodels
import torch
from rich.console import Console

from device.manifest import TensorSpec
from forecaster.data.macro import (
    SERIES_BY_NAME,
    InfoSet,
    MacroPanel,
    information_cut,
    load_macro_panel,
)
from forecaster.errors import DataError
from forecaster.recipe import Recipe
from forecaster.tasks.gdp.news import StudentNews, compare_news, track
from forecaster.tasks.gdp.report import write_gdp_plots
from forecaster.tasks.gdp.settings import (
    DfmCandidate,
    GdpSection,
    GdpTeacherSettings,
    gdp_section,
)
from forecaster.tasks.gdp.student import (
    BAND_LEVELS,
    INPUT_GDP,
    INPUT_MONTHLY,
    OUTPUT_BAND,
    OUTPUT_NOWCAST,
    NowcastStudent,
    SimulationPolicy,
    StudentArch,
    StudentFit,
    StudentLoop,
    StudentTargets,
    export_student,
    fit_student,
    latency_us,
    predict_student,
    run_student_onnx,
    simulate_info_sets,
    stack_inputs,
)
from forecaster.tasks.gdp.teacher import (
    DfmSpec,
    DfmTeacher,
    ar1_nowcast,
    dm_test,
    known_gdp,
    mean_nowcast,
    point_metrics,
)
from forecaster.training.bundles import resolve_signing_key, write_bundle
from forecaster.training.loops import LoopSettings
from forecaster.training.nets import count_parameters
from forecaster.training.reports import environment, report_head

__all__ = [
    "DistillationSets",
    "GdpData",
    "GdpEvaluation",
    "GdpRun",
    "StudentRun",
    "TeacherRun",
    "band_sample",
    "baseline_nowcasts",
    "build_manifest",
    "build_report",
    "calibrate_student_band",
    "distil_student",
    "distillation_sets",
    "evaluate_models",
    "fit_distilled",
    "fit_teacher",
    "hide_series",
    "load_gdp_data",
    "teacher_news",
    "teacher_spec",
    "train_gdp",
]

logger = logging.getLogger(__name__)

MONTHS = (1, 2, 3)


def _day_end(day: date) -> pd.Timestamp:
    """The last nanosecond of `day`: an information cut that includes that day's releases."""
    return pd.Timestamp(day) + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")


@dataclass(frozen=True)
class GdpData:
    """The panel and its quarters per period; every quarter has a full window in the panel."""

    panel: MacroPanel
    train: pd.PeriodIndex
    valid: pd.PeriodIndex
    test: pd.PeriodIndex
    train_cut: pd.Timestamp
    valid_cut: pd.Timestamp

    def periods(self) -> dict[str, tuple[date, date]]:
        """ISO date ranges actually used (train from the panel's first month: the DFM sees it)."""

        def span(first: pd.Timestamp, last: pd.Timestamp) -> tuple[date, date]:
            return first.date(), last.date()

        return {
            "train": span(self.panel.monthly.index[0].start_time, self.train[-1].end_time),
            "validation": span(self.valid[0].start_time, self.valid[-1].end_time),
            "test": span(self.test[0].start_time, self.test[-1].end_time),
        }


def load_gdp_data(recipe: Recipe, section: GdpSection) -> GdpData:
    if recipe.data.source != "macrodata":
        raise DataError(
            f"a gdp recipe reads source = 'macrodata', not {recipe.data.source!r} "
            "(US GDP from statsmodels, monthly indicators from arch.data)"
        )
    split = recipe.split
    panel = load_macro_panel(split.start, split.end, section.series)
    quarters = panel.quarters[section.window_quarters - 1 :]
    ends = quarters.end_time
    train = quarters[ends <= _day_end(split.train_end)]
    valid = quarters[(ends > _day_end(split.train_end)) & (ends <= _day_end(split.valid_end))]
    test = quarters[ends > _day_end(split.valid_end)]
    span = f"{panel.quarters[0]}..{panel.quarters[-1]}"
    for name, period in (("train", train), ("validation", valid), ("test", test)):
        if len(period) < 4:
            raise DataError(
                f"the {name} period has {len(period)} quarters of the macro panel {span}; "
                "move the split dates so that each period has at least 4"
            )
    if section.max_valid_quarters:
        valid = valid[-section.max_valid_quarters :]
    if section.max_test_quarters:
        test = test[-section.max_test_quarters :]
    return GdpData(
        panel=panel,
        train=train,
        valid=valid,
        test=test,
        train_cut=_day_end(split.train_end),
        valid_cut=_day_end(split.valid_end),
    )


def teacher_spec(
    candidate: DfmCandidate, settings: GdpTeacherSettings, series: list[str]
) -> DfmSpec:
    return DfmSpec(
        factors=candidate.factor_map(series),
        factor_orders=candidate.factor_orders,
        idiosyncratic_ar1=settings.idiosyncratic_ar1,
        maxiter=settings.maxiter,
        tolerance=settings.tolerance,
    )


def _by_month(
    actual: np.ndarray, predicted: np.ndarray, months: np.ndarray
) -> dict[str, dict[str, float]]:
    return {
        f"month_{k}": point_metrics(actual[months == k], predicted[months == k]) for k in MONTHS
    }


def _select_teacher(
    data: GdpData, section: GdpSection, infos: list[InfoSet], console: Console
) -> tuple[DfmSpec, list[dict[str, Any]]]:
    """Fit every candidate on the train period; the lowest validation RMSE (mean over the three
    information months) wins. The test period plays no part."""
    actual = np.array([data.panel.gdp[i.quarter] for i in infos])
    months = np.array([i.month for i in infos])
    ended = section.teacher.score_without
    scored = hide_series(data.panel, infos, ended)
    rows: list[dict[str, Any]] = []
    for candidate in section.teacher.candidates:
        spec = teacher_spec(candidate, section.teacher, data.panel.series)
        teacher = DfmTeacher(spec, section.window_quarters).fit(data.panel, data.train_cut)
        scores = _by_month(actual, teacher.nowcasts(data.panel, scored), months)
        mean_rmse = float(np.mean([scores[f"month_{k}"]["rmse"] for k in MONTHS]))
        row = {"spec": spec.label, "fit": teacher.fit_info, "validation": scores}
        if ended:
            row["scored_without"] = ended
            row["validation_all_series"] = _by_month(
                actual, teacher.nowcasts(data.panel, infos), months
            )
        rows.append({**row, "mean_rmse": mean_rmse})
        console.print(f"  DFM {spec.label}: validation RMSE {mean_rmse:.3f} (mean of m1-m3)")
    best = min(range(len(rows)), key=lambda i: rows[i]["mean_rmse"])
    rows[best]["chosen"] = True
    return teacher_spec(section.teacher.candidates[best], section.teacher, data.panel.series), rows


def hide_series(panel: MacroPanel, infos: list[InfoSet], names: list[str]) -> list[InfoSet]:
    """The information sets with the series `names` hidden (calendar month kept)."""
    if not names:
        return infos
    hidden = np.zeros(infos[0].monthly.shape, dtype=bool)
    hidden[:, [panel.series.index(n) for n in names]] = True
    keep = np.zeros(infos[0].gdp.shape, dtype=bool)
    return [replace(i.masked(hidden, keep), month=i.month) for i in infos]


def _vintages(data: GdpData, refit: str) -> list[pd.Timestamp]:
    """Parameter re-estimation dates: the end of validation, then every January 1st before a
    test quarter when re-estimating yearly."""
    cuts = [data.valid_cut]
    if refit == "yearly":
        januaries = (pd.Timestamp(f"{y}-01-01") - pd.Timedelta(1, "ns") for y in data.test.year)
        cuts += sorted({cut for cut in januaries if cut > data.valid_cut})
    return cuts


def _teacher_nowcasts(
    data: GdpData, spec: DfmSpec, section: GdpSection, infos: list[InfoSet], base: DfmTeacher
) -> tuple[np.ndarray, list[dict[str, Any]], DfmTeacher]:
    """Pseudo-real-time teacher: each information set uses the latest parameter vintage
    estimated no later than its cut (expanding window, warm-started EM). Also returns the
    last vintage."""
    vintages = _vintages(data, section.teacher.refit)
    out = np.full(len(infos), np.nan)
    fits = [base.fit_info]
    teacher = base
    for i, cut in enumerate(vintages):
        if i > 0:
            teacher = DfmTeacher(spec, section.window_quarters).fit(
                data.panel, cut, start_params=teacher.params
            )
            fits.append(teacher.fit_info)
        until = vintages[i + 1] if i + 1 < len(vintages) else None
        for j, info in enumerate(infos):
            if info.cut >= cut and (until is None or info.cut < until):
                out[j] = teacher.nowcast(data.panel, info)
    return out, fits, teacher


def baseline_nowcasts(panel: MacroPanel, infos: list[InfoSet]) -> dict[str, np.ndarray]:
    """AR(1) and historical-mean nowcasts for every information set, each from the GDP growth
    released by its cut."""
    ar1, mean = [], []
    for info in infos:
        history = known_gdp(panel, info.cut)
        ar1.append(ar1_nowcast(history, info.quarter))
        mean.append(mean_nowcast(history))
    return {"ar1": np.array(ar1), "mean": np.array(mean)}


def _train_stats(data: GdpData) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Train-period mean and std of every indicator (NaN-aware) and of GDP growth; a series
    with fewer than 2 train observations is left unscaled (mean 0, std 1)."""
    monthly = data.panel.monthly.loc[: data.train[-1].asfreq("M", "end")]
    counts = monthly.notna().sum().to_numpy()
    mean = np.where(counts >= 2, monthly.mean().to_numpy(), 0.0)
    std = monthly.std().to_numpy()
    std = np.where((counts >= 2) & (std > 0), std, 1.0)
    gdp = data.panel.gdp.loc[: data.train[-1]]
    return mean, std, float(gdp.mean()), float(gdp.std())


def _evaluate(
    actual: np.ndarray,
    months: np.ndarray,
    forecasts: dict[str, np.ndarray],
    band: np.ndarray | None = None,
) -> dict[str, Any]:
    """RMSE / MAE / bias per information month for every model, Diebold-Mariano against AR(1),
    and the coverage of the student's band."""
    metrics = {name: _by_month(actual, f, months) for name, f in forecasts.items()}
    dm = {
        name: {
            f"month_{k}": dm_test(
                actual[months == k], f[months == k], forecasts["ar1"][months == k]
            )
            for k in MONTHS
        }
        for name, f in forecasts.items()
        if name != "ar1"
    }
    out: dict[str, Any] = {"metrics": metrics, "dm_vs_ar1": dm}
    if band is not None:
        inside = (actual >= band[:, 0]) & (actual <= band[:, 1])
        out["band_coverage"] = {
            "nominal": BAND_LEVELS[1] - BAND_LEVELS[0],
            **{f"month_{k}": float(inside[months == k].mean()) for k in MONTHS},
        }
    return out


def _gdp_loadings(teacher: DfmTeacher) -> dict[str, float]:
    """The DFM's loadings of GDP on its common factors (standardized units)."""
    assert teacher.results is not None
    params = teacher.results.params
    return {
        str(k): round(float(v), 4)
        for k, v in params.items()
        if str(k).startswith("loading.") and str(k).endswith("->gdp")
    }


# issue 13's goals at the test period: RMSE ratios to AR(1), DM p at month 3, the student's
# distance to its teacher, the band's coverage
GOALS = {
    "rmse_vs_ar1_m3": 0.70,
    "rmse_vs_ar1_m1": 0.90,
    "dm_pvalue_m3": 0.05,
    "student_vs_teacher": 1.10,
    "band_coverage_tolerance": 0.10,
}


def _verdict(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's goals on the test period, each with the measured number and the goal."""
    test = evaluation["test"]
    rmse = {
        name: {k: test["metrics"][name][f"month_{k}"]["rmse"] for k in MONTHS}
        for name in ("teacher", "student", "ar1")
    }
    checks: dict[str, dict[str, Any]] = {}
    for name in ("teacher", "student"):
        for k, goal in ((3, GOALS["rmse_vs_ar1_m3"]), (1, GOALS["rmse_vs_ar1_m1"])):
            ratio = rmse[name][k] / rmse["ar1"][k]
            checks[f"{name}_rmse_vs_ar1_m{k}"] = {
                "value": ratio,
                "goal": goal,
                "met": ratio <= goal,
            }
        p = test["dm_vs_ar1"][name]["month_3"]["pvalue"]
        checks[f"{name}_dm_pvalue_m3"] = {
            "value": p,
            "goal": GOALS["dm_pvalue_m3"],
            "met": p is not None and p < GOALS["dm_pvalue_m3"],
        }
    for k in MONTHS:
        ratio = rmse["student"][k] / rmse["teacher"][k]
        goal = GOALS["student_vs_teacher"]
        checks[f"student_vs_teacher_m{k}"] = {"value": ratio, "goal": goal, "met": ratio <= goal}
        coverage = test["band_coverage"][f"month_{k}"]
        off = abs(coverage - test["band_coverage"]["nominal"])
        checks[f"band_coverage_m{k}"] = {
            "value": coverage,
            "goal": f"{test['band_coverage']['nominal']:.2f} +- {GOALS['band_coverage_tolerance']}",
            "met": off <= GOALS["band_coverage_tolerance"] + 1e-12,
        }
    missed = [f"{name} {c['value']:.3f} (goal {c['goal']})" for name, c in checks.items()
              if not c["met"] and c["value"] is not None]  # fmt: skip
    text = (
        f"Month 3 RMSE: teacher {rmse['teacher'][3]:.3f}, student {rmse['student'][3]:.3f}, "
        f"AR(1) {rmse['ar1'][3]:.3f}; month 1: {rmse['teacher'][1]:.3f} / "
        f"{rmse['student'][1]:.3f} / {rmse['ar1'][1]:.3f}. "
        + ("All goals met." if not missed else "Missed: " + "; ".join(missed) + ".")
    )
    return {"criteria": checks, "met": not missed, "text": text}


def _nowcast_rows(
    infos: list[InfoSet],
    actual: np.ndarray,
    forecasts: dict[str, np.ndarray],
    band: np.ndarray,
) -> list[dict[str, Any]]:
    return [
        {
            "quarter": str(info.quarter),
            "month": info.month,
            "cut": info.cut.isoformat(),
            "actual": round(float(actual[i]), 4),
            **{name: round(float(f[i]), 4) for name, f in forecasts.items()},
            "band": [round(float(band[i, 0]), 4), round(float(band[i, 1]), 4)],
        }
        for i, info in enumerate(infos)
    ]


@dataclass
class TeacherRun:
    """The chosen DFM, its parameter vintages and its nowcasts: `frozen` holds the parameters
    from the end of validation (the student's teacher), `test` follows the refit policy."""

    spec: DfmSpec
    candidates: list[dict[str, Any]]
    frozen: DfmTeacher
    latest: DfmTeacher
    vintages: list[dict[str, Any]]
    valid: np.ndarray
    test: np.ndarray
    frozen_test: np.ndarray
    filter_check_max_abs: float


def fit_teacher(
    data: GdpData,
    section: GdpSection,
    valid_infos: list[InfoSet],
    test_infos: list[InfoSet],
    console: Console,
) -> TeacherRun:
    """Choose the DFM on validation, re-estimate it at the end of validation (the student's
    teacher) and nowcast the test information sets under the refit policy."""
    console.print("teacher: DynamicFactorMQ candidates fitted on the train period ...")
    spec, candidates = _select_teacher(data, section, valid_infos, console)
    frozen = DfmTeacher(spec, section.window_quarters).fit(data.panel, data.valid_cut)
    console.print(
        f"teacher {spec.label} re-estimated at {data.valid_cut.date()}, refit "
        f"{section.teacher.refit}; pseudo-real-time nowcasts of {len(test_infos)} information sets"
    )
    test, vintages, latest = _teacher_nowcasts(data, spec, section, test_infos, frozen)
    frozen_test = frozen.nowcasts(data.panel, test_infos)
    # the fast window filter against statsmodels filtering the whole sample, last quarter
    check = max(
        abs(frozen_test[-i] - frozen.nowcast_full_sample(data.panel, test_infos[-i]))
        for i in (1, 2, 3)
    )
    return TeacherRun(
        spec=spec,
        candidates=candidates,
        frozen=frozen,
        latest=latest,
        vintages=vintages,
        valid=frozen.nowcasts(data.panel, valid_infos),
        test=test,
        frozen_test=frozen_test,
        filter_check_max_abs=float(check),
    )


@dataclass
class StudentRun:
    """The distilled student, its ONNX graph and its outputs `[N, 3]` (nowcast, band)."""

    model: NowcastStudent
    onnx: bytes
    fit: StudentFit
    policy: SimulationPolicy
    train_sets: int
    valid: np.ndarray
    test: np.ndarray
    parity: dict[str, float]
    band: dict[str, Any]


@dataclass(frozen=True)
class DistillationSets:
    """The student's training material: train information sets (the calendar ones first)
    with the frozen teacher's labels and actual GDP (NaN for amplified sets), and the early
    stopping sets of validation with their labels."""

    train: list[InfoSet]
    calendar: int
    labels: np.ndarray
    actual: np.ndarray
    stop: list[InfoSet]
    stop_labels: np.ndarray
    policy: SimulationPolicy


def _policy(section: GdpSection, panel: MacroPanel) -> SimulationPolicy:
    s = section.student
    ended = tuple(panel.series.index(n) for n in section.teacher.score_without)
    return SimulationPolicy(
        s.delay_prob,
        s.absent_prob,
        s.hole_prob,
        s.amplify_prob,
        s.amplify_max,
        s.ended_prob if ended else 0.0,
        ended,
    )


def distillation_sets(
    data: GdpData,
    section: GdpSection,
    teacher: DfmTeacher,
    valid_infos: list[InfoSet],
    rng: np.random.Generator,
) -> DistillationSets:
    """Calendar and simulated information sets of the train quarters and the early-stopping
    sets of validation, labelled by `teacher` (the end-of-validation parameters)."""
    s, wq, panel = section.student, section.window_quarters, data.panel
    quarters = data.train[-s.max_train_quarters :] if s.max_train_quarters else data.train
    policy = _policy(section, panel)
    calendar = panel.calendar_info_sets(quarters, wq)
    train_infos = calendar + simulate_info_sets(
        panel, quarters, s.sims_per_quarter, wq, policy, rng, train_mean=_train_stats(data)[0]
    )
    # early stopping: the real calendar sets of validation plus simulated ones (not amplified)
    # (with `ended_prob`, also the calendar sets without the series that end before the test)
    stop_infos = list(valid_infos)
    if policy.ended_prob:
        stop_infos += hide_series(panel, valid_infos, section.teacher.score_without)
    stop_infos += simulate_info_sets(panel, data.valid, s.valid_sims_per_quarter, wq, policy, rng)
    # an amplified window is no longer that quarter's data: only the teacher labels it
    actual = np.array([np.nan if i.amplified else panel.gdp[i.quarter] for i in train_infos])
    return DistillationSets(
        train=train_infos,
        calendar=len(calendar),
        labels=teacher.nowcasts(panel, train_infos),
        actual=actual,
        stop=stop_infos,
        stop_labels=teacher.nowcasts(panel, stop_infos),
        policy=policy,
    )


def fit_distilled(
    data: GdpData, section: GdpSection, sets: DistillationSets, seed: int
) -> tuple[NowcastStudent, StudentFit]:
    """A fresh student of the recipe's kind fitted to `sets` (early stopping on `sets.stop`)."""
    s, wq = section.student, section.window_quarters
    m_mean, m_std, g_mean, g_std = _train_stats(data)
    torch.manual_seed(seed)
    arch = StudentArch(s.kind, s.clip)
    student = NowcastStudent(3 * wq, wq - 1, m_mean, m_std, g_mean, g_std, s.hidden, arch)
    loop = LoopSettings(s.epochs, s.patience, s.lr, s.batch_size, seed)
    fit = fit_student(
        student,
        stack_inputs(sets.train),
        StudentTargets(sets.labels, sets.actual, sets.stop_labels),
        stack_inputs(sets.stop),
        StudentLoop(loop, s.weight_decay, s.distill_weight, s.ridge),
    )
    return student, fit


def band_sample(
    data: GdpData, section: GdpSection, sets: DistillationSets, valid_infos: list[InfoSet]
) -> list[InfoSet]:
    """The calendar information sets whose errors calibrate the band: validation's, and with
    `band_sample = "train_validation"` the train quarters' before them (never the test's)."""
    train = sets.train[: sets.calendar] if section.student.band_sample != "validation" else []
    return [*train, *valid_infos]


def calibrate_student_band(
    student: NowcastStudent, panel: MacroPanel, section: GdpSection, infos: list[InfoSet]
) -> dict[str, Any]:
    """Set the student's band from its errors on `infos` (calendar sets); the report's entry."""
    s = section.student
    actual = np.array([panel.gdp[i.quarter] for i in infos])
    nowcasts = predict_student(student, stack_inputs(infos))[:, 0]
    months = np.array([i.month for i in infos]) if s.band == "by_month" else None
    offsets = student.calibrate_band(actual - nowcasts, nowcasts, months, s.band_scale)
    return {
        "method": (
            "split conformal: quantiles of the student's errors on calendar information sets "
            f"({s.band}), divided by 1 + {s.band_scale} |nowcast - train mean| / train std; "
            "the band is the nowcast plus the offsets times that factor"
        ),
        "sample": [str(infos[0].quarter), str(infos[-1].quarter)],
        "levels": list(BAND_LEVELS),
        "offsets_by_month": offsets.round(6).tolist(),
        "scale": s.band_scale,
        "errors": len(actual),
    }


def distil_student(
    data: GdpData,
    section: GdpSection,
    teacher: TeacherRun,
    valid_infos: list[InfoSet],
    test_infos: list[InfoSet],
    seed: int,
    console: Console,
) -> StudentRun:
    """Label simulated information sets of train quarters with the frozen teacher, distil,
    calibrate the band, export, and check torch against onnxruntime on the real validation
    and test sets."""
    rng = np.random.default_rng(seed)
    console.print("student: teacher labels for the train and early-stopping sets ...")
    sets = distillation_sets(data, section, teacher.frozen, valid_infos, rng)
    console.print(f"student: {len(sets.train)} train sets, {len(sets.stop)} for early stopping")
    student, fit = fit_distilled(data, section, sets, seed)
    console.print(
        f"student ({section.student.kind}): {fit.epochs} epochs (best {fit.best_epoch}), "
        f"validation RMSE vs teacher {fit.best_valid_rmse_vs_teacher:.3f}"
    )
    band = calibrate_student_band(
        student, data.panel, section, band_sample(data, section, sets, valid_infos)
    )
    x_valid, x_test = stack_inputs(valid_infos), stack_inputs(test_infos)
    graph = export_student(student)
    valid, test = run_student_onnx(graph, x_valid), run_student_onnx(graph, x_test)
    parity = {
        "test_max_abs": float(np.abs(predict_student(student, x_test) - test).max()),
        "validation_max_abs": float(np.abs(predict_student(student, x_valid) - valid).max()),
        "test_missing_share": float(np.isnan(x_test[0]).mean()),
    }
    return StudentRun(student, graph, fit, sets.policy, len(sets.train), valid, test, parity, band)


PROTOCOL = {
    "information_sets": (
        "end of month 1, 2 and 3 of each quarter; a value is visible only after its release "
        "time (see data.monthly.*.release); final-vintage data, no revisions"
    ),
    "teacher": (
        "DynamicFactorMQ candidates fitted by EM on the data released by the end of train; the "
        "lowest mean validation RMSE wins; re-estimated at the end of validation and, with "
        "refit = yearly, every January 1st on everything released by then (expanding window, "
        "EM warm-started). Between re-estimations the parameters stay fixed and the Kalman "
        "smoother runs over each information set."
    ),
    "student": (
        "distilled from the teacher's end-of-validation parameters (teacher_frozen) over "
        "simulated information sets of train quarters (random moments within the quarter, plus "
        "late releases, absent series and gaps); early stopping on the validation calendar "
        "information sets; never re-trained during the test. Its 10-90% band is split "
        "conformal on its errors at the calendar sets of student.band.sample (train and "
        "validation quarters, never the test's), widened by student.band.scale as the "
        "nowcast leaves mean growth; only the test coverage is a check"
    ),
    "baselines": (
        "AR(1) by least squares and the historical mean, both on the GDP growth released by "
        "the information cut (expanding window from the panel's start)"
    ),
    "dm_test": (
        "statsmodels diebold_mariano_test: squared-error loss, Harvey-Leybourne-Newbold "
        "correction, h = 1, no HAC lags; negative statistic = better than AR(1)"
    ),
}


@dataclass(frozen=True)
class GdpEvaluation:
    """Every model's nowcasts and metrics on validation and test (the test only reported),
    the headline RMSEs, the verdict and the student's latency."""

    test_y: np.ndarray
    test_forecasts: dict[str, np.ndarray]
    evaluation: dict[str, Any]
    headline: dict[str, float]
    verdict: dict[str, Any]
    latency: dict[str, float]


@dataclass(frozen=True)
class GdpRun:
    """What the report and the manifest are built from: the stages' results, the test
    information sets, the last quarter's news and the stages' timings."""

    teacher: TeacherRun
    student: StudentRun
    evaluation: GdpEvaluation
    test_infos: list[InfoSet]
    news: dict[str, Any]
    timings: dict[str, float]


def _forecasts(
    panel: MacroPanel,
    section: GdpSection,
    teacher: TeacherRun,
    student: StudentRun,
    infos: tuple[list[InfoSet], list[InfoSet]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Validation and test nowcasts by model name, baselines included."""
    valid_infos, test_infos = infos
    valid_fc = {"teacher": teacher.valid, "student": student.valid[:, 0]}
    valid_fc |= baseline_nowcasts(panel, valid_infos)
    test_fc = {"teacher": teacher.test}
    if section.teacher.refit != "once":
        test_fc["teacher_frozen"] = teacher.frozen_test
    test_fc |= {"student": student.test[:, 0]} | baseline_nowcasts(panel, test_infos)
    return valid_fc, test_fc


def evaluate_models(
    data: GdpData,
    section: GdpSection,
    teacher: TeacherRun,
    student: StudentRun,
    infos: tuple[list[InfoSet], list[InfoSet]],
) -> GdpEvaluation:
    """RMSE/MAE by month of the quarter, band coverage, DM tests, the student's fidelity to
    its teacher, the headline and the verdict."""
    panel, (valid_infos, test_infos) = data.panel, infos
    valid_fc, test_fc = _forecasts(panel, section, teacher, student, infos)
    valid_y = np.array([panel.gdp[i.quarter] for i in valid_infos])
    test_y = np.array([panel.gdp[i.quarter] for i in test_infos])
    months = {
        "validation": np.array([i.month for i in valid_infos]),
        "test": np.array([i.month for i in test_infos]),
    }
    evaluation = {
        "validation": _evaluate(valid_y, months["validation"], valid_fc, student.valid[:, 1:]),
        "test": _evaluate(test_y, months["test"], test_fc, student.test[:, 1:]),
    }
    # distillation fidelity: the student against the exact teacher it learned from
    for split, frozen, own in (
        ("validation", teacher.valid, student.valid[:, 0]),
        ("test", teacher.frozen_test, student.test[:, 0]),
    ):
        evaluation[split]["student_vs_teacher_frozen"] = _by_month(frozen, own, months[split])
    tm = evaluation["test"]["metrics"]
    headline = {
        f"{name}_rmse_m3": tm[name]["month_3"]["rmse"]
        for name in ("teacher", "student", "ar1", "mean")
    }
    headline["student_vs_teacher_rmse_m3"] = (
        headline["student_rmse_m3"] / headline["teacher_rmse_m3"]
    )
    verdict = _verdict(evaluation)
    latency = latency_us(student.onnx, stack_inputs(test_infos), section.student.latency_runs)
    return GdpEvaluation(test_y, test_fc, evaluation, headline, verdict, latency)


def teacher_news(
    data: GdpData, section: GdpSection, teacher: TeacherRun, student: StudentRun
) -> dict[str, Any]:
    """What moved the nowcast, teacher and student side by side, with the end-of-validation
    parameters the student learned from: the revision between month 2 and month 3 of the last
    test quarter (statsmodels' news and the student's attribution of the same releases), and
    the track of the chosen quarters with both decompositions at every release time."""
    panel, wq, last = data.panel, section.window_quarters, data.test[-1]
    explainer = StudentNews.of(student.onnx)
    before = panel.info_set(last, information_cut(last, 2), wq, 2)
    after = panel.info_set(last, information_cut(last, 3), wq, 3)
    news = teacher.frozen.news(panel, before, after)
    rows, previous, updated = explainer.impacts(panel, before, after)
    by_series: dict[str, float] = {}
    for row in rows:
        by_series[row["series"]] = by_series.get(row["series"], 0.0) + row["impact_pp"]
    news["vintage"] = teacher.frozen.fit_info["vintage"]
    news["student"] = {
        "previous": previous,
        "updated": updated,
        "impact_by_series": by_series,
        "releases": rows,
    }
    chosen = [q for q in map(pd.Period, section.track_quarters) if q in data.test] or [last]
    tracks = [track(panel, q, wq, teacher.frozen, explainer) for q in chosen]
    return {"revision": news, "tracks": tracks, "comparison": compare_news(tracks)}


_NO_TEACHER_ONNX = (
    "none: the teacher is a statsmodels state-space model (Kalman filter over a "
    "ragged panel) with no ONNX form; it is scored in Python on the same "
    "information sets as the student"
)


def build_report(
    recipe: Recipe, quick: bool, section: GdpSection, data: GdpData, run: GdpRun
) -> dict[str, Any]:
    """report.json: data and protocol, teacher and student, evaluation, headline, verdict,
    news, every test nowcast and the timings."""
    panel, wq = data.panel, section.window_quarters
    teacher, student, ev = run.teacher, run.student, run.evaluation
    periods = (("train", data.train), ("validation", data.valid), ("test", data.test))
    return {
        **report_head("gdp", recipe, quick),
        "region": section.region,
        "recipe": recipe.model_dump(mode="json", exclude={"source_path"}),
        "environment": environment(statsmodels=statsmodels.__version__),
        "data": {
            **panel.describe(),
            "window_months": 3 * wq,
            "gdp_lags": wq - 1,
            "periods": {name: [str(q[0]), str(q[-1])] for name, q in periods},
        },
        "protocol": PROTOCOL,
        "teacher": {
            "kind": "statsmodels DynamicFactorMQ",
            "candidates": teacher.candidates,
            "chosen": teacher.spec.label,
            "refit": section.teacher.refit,
            "vintages": teacher.vintages,
            "gdp_loadings": _gdp_loadings(teacher.frozen),
            "window_filter_vs_statsmodels_max_abs": teacher.filter_check_max_abs,
            "teacher_onnx": _NO_TEACHER_ONNX,
        },
        "student": {
            "kind": section.student.kind,
            "hidden": section.student.hidden,
            "parameters": count_parameters(student.model),
            "bytes": len(student.onnx),
            "training": student.fit.__dict__,
            "simulation_policy": student.policy.__dict__,
            "band": student.band,
            "parity": student.parity,
            **ev.latency,
        },
        "evaluation": ev.evaluation,
        "headline": ev.headline,
        "verdict": ev.verdict,
        "news": run.news["revision"],
        "tracks": run.news["tracks"],
        "news_comparison": run.news["comparison"],
        "nowcasts": _nowcast_rows(
            run.test_infos, ev.test_y, ev.test_forecasts, student.test[:, 1:]
        ),
        "timings_s": {k: round(v, 2) for k, v in run.timings.items()},
    }


def _manifest_metrics(run: GdpRun) -> dict[str, Any]:
    tm = run.evaluation.evaluation["test"]["metrics"]
    return {
        **{f"test_rmse_m{k}": tm["student"][f"month_{k}"]["rmse"] for k in MONTHS},
        **{f"teacher_test_rmse_m{k}": tm["teacher"][f"month_{k}"]["rmse"] for k in MONTHS},
        **{f"ar1_test_rmse_m{k}": tm["ar1"][f"month_{k}"]["rmse"] for k in MONTHS},
        "test_mae_m3": tm["student"]["month_3"]["mae"],
        "band_coverage_m3": run.evaluation.evaluation["test"]["band_coverage"]["month_3"],
        "bytes": len(run.student.onnx),
        "latency_us_median": run.evaluation.latency["latency_us_median"],
    }


def build_manifest(
    recipe: Recipe, section: GdpSection, data: GdpData, run: GdpRun
) -> dict[str, Any]:
    """manifest.json: the two inputs and two outputs, data layout, periods, the distillation
    step and key metrics."""
    wq, series = section.window_quarters, data.panel.series
    window = 3 * wq
    return {
        "task": "gdp",
        "name": recipe.model.name,
        "inputs": [
            TensorSpec(name=INPUT_MONTHLY, shape=["batch", window, len(series)]),
            TensorSpec(name=INPUT_GDP, shape=["batch", wq - 1]),
        ],
        "outputs": [
            TensorSpec(name=OUTPUT_NOWCAST, shape=["batch"]),
            TensorSpec(name=OUTPUT_BAND, shape=["batch", len(BAND_LEVELS)]),
        ],
        "window": window,
        "quantiles": list(BAND_LEVELS),
        "series": series,
        "data": {
            "source": recipe.data.source,
            "region": section.region,
            "target": "gdp: real GDP growth, % q/q annualized",
            "units": {name: SERIES_BY_NAME[name].units for name in series},
            "monthly_rows": (
                f"the {window} months ending with the target quarter's last month, oldest "
                "first; columns in `series` order; NaN where not released"
            ),
            "gdp_rows": f"GDP growth of the {wq - 1} quarters before the target, oldest first",
        },
        "periods": data.periods(),
        "compression": [
            {
                "name": "distill",
                "params": {
                    "teacher": f"DynamicFactorMQ {run.teacher.spec.label}",
                    "information_sets": run.student.train_sets,
                    "distill_weight": section.student.distill_weight,
                    "best_epoch": run.student.fit.best_epoch,
                },
            }
        ],
        "metrics": _manifest_metrics(run),
        "created_at": datetime.now(UTC),
    }


def train_gdp(
    recipe: Recipe, registry: Path, key: Path | None, quick: bool, console: Console | None = None
) -> Path:
    """Train, evaluate, sign and write one GDP nowcast bundle; returns its directory."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    section = gdp_section(recipe, quick)
    private_key, key_note = resolve_signing_key(key, registry)
    data = load_gdp_data(recipe, section)
    panel, wq = data.panel, section.window_quarters
    console.print(
        f"[bold]{recipe.model.name}[/]: GDP {panel.quarters[0]}..{panel.quarters[-1]}, "
        f"{len(panel.series)} monthly indicators; quarters train {len(data.train)}, "
        f"validation {len(data.valid)}, test {len(data.test)}"
    )
    infos = panel.calendar_info_sets(data.valid, wq), panel.calendar_info_sets(data.test, wq)
    lap = time.perf_counter()
    teacher = fit_teacher(data, section, *infos, console)
    timings = {"teacher": time.perf_counter() - lap}
    lap = time.perf_counter()
    student = distil_student(data, section, teacher, *infos, recipe.seed, console)
    timings["student"] = time.perf_counter() - lap
    evaluation = evaluate_models(data, section, teacher, student, infos)
    news = teacher_news(data, section, teacher, student)
    timings["total"] = time.perf_counter() - started
    run = GdpRun(teacher, student, evaluation, infos[1], news, timings)
    report = build_report(recipe, quick, section, data, run)
    manifest = build_manifest(recipe, section, data, run)
    path = write_bundle(registry, manifest, student.onnx, private_key, report)
    for plot in write_gdp_plots(path, report):
        logger.info("wrote %s", plot)
    console.print(f"[bold]verdict[/]: {evaluation.verdict['text']}")
    console.print(key_note)
    return path
