"""Which panel and which DynamicFactorMQ specification should the GDP teacher use? Chosen on
validation only (the split of models/gdp/us.toml), with the pseudo-real-time calendar
information sets and the fixed-parameter window filter of `forecaster.tasks.gdp.teacher`.

    cd /work/wt/<you> && export PYTHONPATH=$PWD OMP_NUM_THREADS=1
    nice -n 10 .venv/bin/python -m scripts.gdp_panel_study         # validation table (~2 min)
    nice -n 10 .venv/bin/python -m scripts.gdp_panel_study --test  # + the test, scored once

Prints the validation table (RMSE per information month and its ratio to AR(1)), the choice,
checks of the window filter and of `DynamicFactorMQResults.news` on consecutive release
vintages, and with --test the chosen teacher on 2004Q1-2009Q3 (yearly re-estimation, as the
recipe's `refit = "yearly"`) against AR(1) and the historical mean, with Diebold-Mariano p.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecaster.data.macro import (
    REAL_ACTIVITY,
    InfoSet,
    MacroPanel,
    load_macro_panel,
)
from forecaster.tasks.gdp.news import release_times
from forecaster.tasks.gdp.pipeline import baseline_nowcasts, hide_series
from forecaster.tasks.gdp.teacher import (
    DfmSpec,
    DfmTeacher,
    dm_test,
)

RECIPE = Path(__file__).resolve().parents[1] / "models" / "gdp" / "us.toml"
WQ = 3
MONTHS = (1, 2, 3)
FINANCIAL = (
    "core_cpi",
    "aaa",
    "baa",
    "baa_aaa_spread",
    "market_return",
    "wti",
    "sp500_return",
    "sp500_vol",
)
CORE_REAL = ("real_pce", "unemployment", "industrial_production")
LIVE_REAL = ("real_pce", "unemployment")  # the real-activity series that outlive 2004
ENDED = "industrial_production"  # USMacroSWM stops in 2004-12: missing in the test windows
Blocks = dict[str, list[str]]


@dataclass(frozen=True)
class Candidate:
    """One teacher: its panel columns and the DynamicFactorMQ factor structure."""

    label: str
    series: tuple[str, ...]
    factors: int | Blocks
    factor_orders: int = 1
    idiosyncratic_ar1: bool = True

    def spec(self, maxiter: int = 200) -> DfmSpec:
        # DfmSpec is typed for global factors; DynamicFactorMQ also takes a {series: blocks}
        # dict, which DfmTeacher passes through unchanged.
        factors: Any = self.factors
        return DfmSpec(factors, self.factor_orders, self.idiosyncratic_ar1, maxiter=maxiter)


def _blocks(series: tuple[str, ...], real: tuple[str, ...], with_global: bool) -> Blocks:
    """NY Fed style: each series loads on its block (real activity or financial), and on a
    global factor when `with_global`; GDP loads on every factor."""
    extra = ["global"] if with_global else []
    out = {s: [*extra, "real" if s in real else "financial"] for s in series}
    out["gdp"] = [*extra, "real", "financial"]
    return out


def candidates() -> list[Candidate]:
    real5 = tuple(REAL_ACTIVITY)
    every = (*FINANCIAL, *real5)
    core = (*FINANCIAL, *CORE_REAL)
    small = ("core_cpi", "baa_aaa_spread", "sp500_vol", *CORE_REAL)
    out = [
        Candidate("financial (today's panel), 1f", FINANCIAL, 1),
        Candidate("financial (today's panel), 2f", FINANCIAL, 2),
        Candidate("real 3, 1f", CORE_REAL, 1),
        Candidate("real 5, 1f", real5, 1),
        Candidate("real 3 + financial 8, 1f", core, 1),
        Candidate("real 3 + financial 8, 2f", core, 2),
        Candidate("real 5 + financial 8, 1f", every, 1),
        Candidate("real 5 + financial 8, 2f", every, 2),
        Candidate("real 3 + cpi/spread/vol, 1f", small, 1),
        Candidate("real 3 + financial 8, blocks", core, _blocks(core, CORE_REAL, False)),
        Candidate("real 3 + financial 8, global+blocks", core, _blocks(core, CORE_REAL, True)),
        Candidate("real 5 + financial 8, global+blocks", every, _blocks(every, real5, True)),
        Candidate("real 3 + cpi/spread/vol, global+blocks", small, _blocks(small, CORE_REAL, True)),
        Candidate("real 2, 1f", LIVE_REAL, 1),
        Candidate("real 2 + financial 8, 2f", (*FINANCIAL, *LIVE_REAL), 2),
        Candidate(
            "real 2 + financial 8, global+blocks",
            (*FINANCIAL, *LIVE_REAL),
            _blocks((*FINANCIAL, *LIVE_REAL), LIVE_REAL, True),
        ),
    ]
    # factor order and idiosyncratic AR(1) on the two structures most likely to win
    for base in (out[4], out[10]):
        out.append(Candidate(f"{base.label}, VAR(2)", base.series, base.factors, factor_orders=2))
        out.append(
            Candidate(
                f"{base.label}, iid idio.", base.series, base.factors, idiosyncratic_ar1=False
            )
        )
    return out


@dataclass(frozen=True)
class Split:
    panel: MacroPanel
    train_cut: pd.Timestamp
    valid_cut: pd.Timestamp
    valid: pd.PeriodIndex
    test: pd.PeriodIndex


def _day_end(day: str) -> pd.Timestamp:
    return pd.Timestamp(day) + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")


def load_split() -> Split:
    """The recipe's panel span and split (train / validation / test quarters as the trainer
    builds them: every quarter with a full window)."""
    split = tomllib.loads(RECIPE.read_text())["split"]
    panel = load_macro_panel(
        pd.Timestamp(split["start"]).date(), series=[*FINANCIAL, *REAL_ACTIVITY]
    )
    train_cut, valid_cut = _day_end(split["train_end"]), _day_end(split["valid_end"])
    quarters = panel.quarters[WQ - 1 :]
    ends = quarters.end_time
    valid = quarters[(ends > train_cut) & (ends <= valid_cut)]
    return Split(panel, train_cut, valid_cut, valid, quarters[ends > valid_cut])


def subset(panel: MacroPanel, series: tuple[str, ...]) -> MacroPanel:
    cols = [panel.series.index(s) for s in series]
    return MacroPanel(
        monthly=panel.monthly[list(series)],
        gdp=panel.gdp,
        monthly_released=panel.monthly_released[:, cols],
        gdp_released=panel.gdp_released,
    )


def rmse_by_month(actual: np.ndarray, predicted: np.ndarray, months: np.ndarray) -> list[float]:
    return [float(np.sqrt(np.mean((predicted - actual)[months == k] ** 2))) for k in MONTHS]


_BASELINE_LABELS = {"ar1": "AR(1)", "mean": "historical mean"}


def baselines(panel: MacroPanel, infos: list[InfoSet]) -> dict[str, np.ndarray]:
    """The pipeline's baseline nowcasts under the labels this study prints."""
    return {_BASELINE_LABELS[k]: v for k, v in baseline_nowcasts(panel, infos).items()}


def validate(split: Split) -> list[dict[str, Any]]:
    """Every candidate fitted on the train period, scored on the validation calendar sets as
    they are and with industrial production hidden (the test period's availability)."""
    infos = split.panel.calendar_info_sets(split.valid, WQ)
    actual = np.array([split.panel.gdp[i.quarter] for i in infos])
    months = np.array([i.month for i in infos])
    base = baselines(split.panel, infos)
    ar1 = rmse_by_month(actual, base["AR(1)"], months)
    rows: list[dict[str, Any]] = []
    for cand in candidates():
        panel = subset(split.panel, cand.series)
        teacher = DfmTeacher(cand.spec(), WQ).fit(panel, split.train_cut)
        own = panel.calendar_info_sets(split.valid, WQ)
        rmse = rmse_by_month(actual, teacher.nowcasts(panel, own), months)
        ended = rmse_by_month(actual, teacher.nowcasts(panel, _without_ended(panel, own)), months)
        rows.append({"label": cand.label, "candidate": cand, "rmse": rmse, "ended": ended})
        em = teacher.fit_info["em_iterations"]
        print(f"  {cand.label:48s} {_fmt(rmse)} | {_fmt(ended)}   EM {em}", flush=True)
    mean = rmse_by_month(actual, base["historical mean"], months)
    rows.append({"label": "AR(1)", "candidate": None, "rmse": ar1, "ended": ar1})
    rows.append({"label": "historical mean", "candidate": None, "rmse": mean, "ended": mean})
    for row in rows:
        row["ratio"] = _ratio(row["ended"], ar1)
    return rows


def _without_ended(panel: MacroPanel, infos: list[InfoSet]) -> list[InfoSet]:
    """The validation sets as the test period will see them: industrial production (which ends
    in 2004-12) hidden; the parameters still know it, as the test's do."""
    return hide_series(panel, infos, [ENDED] if ENDED in panel.series else [])


def _ratio(rmse: list[float], ar1: list[float]) -> list[float]:
    return [r / a for r, a in zip(rmse, ar1, strict=False)]


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:6.3f}" for v in values)


def print_validation(rows: list[dict[str, Any]]) -> Candidate:
    """The table (markdown, for docs/NOWCAST.md). The lowest mean RMSE over m1-m3 *under the
    test period's availability* (industrial production hidden) wins: that series' end in
    2004-12 is known in advance, so a teacher that only shines with it would be chosen for a
    panel it will not see."""
    print(
        "\n| candidate | RMSE m1 | m2 | m3 | without IP: m1 | m2 | m3 | mean | / AR(1) m1 | m2 |"
        " m3 |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        cells = [*row["rmse"], *row["ended"], np.mean(row["ended"])]
        print(
            f"| {row['label']} | {' | '.join(f'{v:.3f}' for v in cells)} | "
            f"{' | '.join(f'{v:.2f}' for v in row['ratio'])} |"
        )
    models = [row for row in rows if row["candidate"]]
    best = min(models, key=lambda row: float(np.mean(row["ended"])))
    print(f"\nchosen on validation: {best['label']}")
    chosen: Candidate = best["candidate"]
    return chosen


def check_window_filter(split: Split, cand: Candidate, teacher: DfmTeacher) -> float:
    """Max |window filter - full statsmodels run| over a few validation information sets."""
    panel = subset(split.panel, cand.series)
    infos = panel.calendar_info_sets(split.valid[-2:], WQ)
    return max(
        abs(teacher.nowcast(panel, i) - teacher.nowcast_full_sample(panel, i)) for i in infos
    )


def release_vintages(panel: MacroPanel, quarter: pd.Period) -> list[pd.Timestamp]:
    """Every distinct release time inside `quarter` whose value enters its window."""
    return release_times(panel, quarter, WQ)


def check_news(
    split: Split, cand: Candidate, teacher: DfmTeacher, quarter: pd.Period
) -> dict[str, Any]:
    """statsmodels' news between consecutive release vintages of `quarter`: do the impacts add
    up to the revision, and does the revision equal the difference of our nowcasts?"""
    panel = subset(split.panel, cand.series)
    cuts = release_vintages(panel, quarter)
    infos = [panel.info_set(quarter, c, WQ) for c in cuts]
    sum_gap, nowcast_gap, biggest = 0.0, 0.0, []
    for before, after in itertools.pairwise(infos):
        news = teacher.news(panel, before, after)
        total = sum(r["impact"] for r in news["releases"])
        sum_gap = max(sum_gap, abs(total - (news["updated"] - news["previous"])))
        nowcast_gap = max(nowcast_gap, abs(news["updated"] - teacher.nowcast(panel, after)))
        top = max(news["releases"], key=lambda r: abs(r["impact"]), default=None)
        if top:
            biggest.append(
                (
                    after.cut.strftime("%m-%d %H:%M"),
                    top["series"],
                    top["period"],
                    round(top["impact"], 3),
                )
            )
    return {
        "quarter": str(quarter),
        "vintages": len(cuts),
        "max |sum impacts - revision|": sum_gap,
        "max |updated - window-filter nowcast|": nowcast_gap,
        "largest impact per vintage": biggest,
    }


def _teacher_test(split: Split, cand: Candidate) -> dict[str, np.ndarray]:
    """Pseudo-real time as the trainer does it: parameters from the end of validation, then
    re-estimated every 1 January (expanding window, warm-started EM); also the frozen ones."""
    panel = subset(split.panel, cand.series)
    infos = panel.calendar_info_sets(split.test, WQ)
    frozen = DfmTeacher(cand.spec(), WQ).fit(panel, split.valid_cut)
    years = sorted({q.year for q in split.test})
    cuts = [split.valid_cut] + [
        pd.Timestamp(f"{y}-01-01") - pd.Timedelta(1, "ns") for y in years[1:]
    ]
    yearly, teacher = np.full(len(infos), np.nan), frozen
    for i, cut in enumerate(cuts):
        if i:
            teacher = DfmTeacher(cand.spec(), WQ).fit(panel, cut, start_params=teacher.params)
        until = cuts[i + 1] if i + 1 < len(cuts) else pd.Timestamp.max
        for j, info in enumerate(infos):
            if cut <= info.cut < until:
                yearly[j] = teacher.nowcast(panel, info)
    return {
        "teacher (yearly re-estimation)": yearly,
        "teacher, end-of-validation parameters": frozen.nowcasts(panel, infos),
    }


def score_test(split: Split, cand: Candidate) -> None:
    """The test period, scored once for the report."""
    infos = split.panel.calendar_info_sets(split.test, WQ)
    actual = np.array([split.panel.gdp[i.quarter] for i in infos])
    months = np.array([i.month for i in infos])
    forecasts = {**_teacher_test(split, cand), **baselines(split.panel, infos)}
    ar1 = forecasts["AR(1)"]
    print(f"\ntest {split.test[0]}..{split.test[-1]} ({len(split.test)} quarters), {cand.label}")
    print(
        "| model | RMSE m1 | m2 | m3 | / AR(1) m1 | m2 | m3 | DM p m1 | m2 | m3 |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for name, f in forecasts.items():
        rmse = rmse_by_month(actual, f, months)
        ps = [
            dm_test(actual[months == k], f[months == k], ar1[months == k])["pvalue"] for k in MONTHS
        ]
        pcol = " | ".join("" if p is None else f"{p:.3f}" for p in ps)
        print(
            f"| {name} | {' | '.join(f'{v:.3f}' for v in rmse)} | "
            f"{' | '.join(f'{v:.2f}' for v in _ratio(rmse, rmse_by_month(actual, ar1, months)))} | {pcol} |"
        )


def _train_stats(panel: MacroPanel, quarters: pd.PeriodIndex) -> tuple[Any, ...]:
    monthly = panel.monthly.loc[: quarters[-1].asfreq("M", "end")]
    gdp = panel.gdp.loc[: quarters[-1]]
    std = monthly.std().fillna(1.0).to_numpy()
    return monthly.mean().fillna(0.0).to_numpy(), std, float(gdp.mean()), float(gdp.std())


@dataclass(frozen=True)
class StudentDesign:
    """One student to distil: layer widths, simulated sets per train quarter and the share of
    them without industrial production (the test period's availability)."""

    hidden: tuple[int, ...]
    sims: int = 40
    ended_prob: float = 0.0


def distil(split: Split, cand: Candidate, design: StudentDesign) -> dict[str, Any]:
    """Distil the end-of-validation teacher into a `NowcastStudent` (`hidden = ()`: linear in
    the standardized values and the masks) as the trainer does (calendar and simulated sets
    per train quarter, recipe policy); RMSE against the teacher on the validation calendar
    sets as they are and without industrial production, and on simulated validation sets."""
    import torch

    from forecaster.tasks.gdp.student import (
        NowcastStudent,
        SimulationPolicy,
        StudentLoop,
        StudentTargets,
        fit_student,
        predict_student,
        simulate_info_sets,
        stack_inputs,
    )
    from forecaster.training.loops import LoopSettings

    torch.set_num_threads(1)
    panel = subset(split.panel, cand.series)
    teacher = DfmTeacher(cand.spec(), WQ).fit(panel, split.valid_cut)
    train_q = panel.quarters[WQ - 1 :]
    train_q = train_q[train_q.end_time <= split.train_cut]
    mean, std, g_mean, g_std = _train_stats(panel, train_q)
    rng = np.random.default_rng(0)
    ended = (panel.series.index(ENDED),) if ENDED in panel.series else ()
    policy = SimulationPolicy(0.2, 0.05, 0.03, 0.3, 3.0, design.ended_prob, ended)
    train = panel.calendar_info_sets(train_q, WQ) + simulate_info_sets(
        panel, train_q, design.sims, WQ, policy, rng, train_mean=mean
    )
    valid = panel.calendar_info_sets(split.valid, WQ)
    no_ip = _without_ended(panel, valid)
    sims = simulate_info_sets(panel, split.valid, 10, WQ, SimulationPolicy(), rng)
    stop = valid + (no_ip if design.ended_prob else []) + sims
    torch.manual_seed(0)
    student = NowcastStudent(3 * WQ, WQ - 1, mean, std, g_mean, g_std, list(design.hidden))
    labels = teacher.nowcasts(panel, train)
    targets = StudentTargets(labels, np.full(len(labels), np.nan), teacher.nowcasts(panel, stop))
    loop = StudentLoop(LoopSettings(400, 40, 3e-3, 256, 0), 1e-4, 1.0)
    fit_student(student, stack_inputs(train), targets, stack_inputs(stop), loop)
    out: dict[str, Any] = {}
    months = np.array([i.month for i in valid])
    for name, infos in (("calendar", valid), ("calendar without IP", no_ip), ("simulated", sims)):
        gap = predict_student(student, stack_inputs(infos))[:, 0] - teacher.nowcasts(panel, infos)
        out[name] = float(np.sqrt(np.mean(gap**2)))
        if name != "simulated":
            teacher_rmse = rmse_by_month(
                np.array([panel.gdp[i.quarter] for i in infos]),
                teacher.nowcasts(panel, infos),
                months,
            )
            student_rmse = rmse_by_month(
                np.array([panel.gdp[i.quarter] for i in infos]),
                predict_student(student, stack_inputs(infos))[:, 0],
                months,
            )
            out[f"{name}: student/teacher RMSE m1-m3"] = [
                round(s / t, 3) for s, t in zip(student_rmse, teacher_rmse, strict=True)
            ]
    return out


CHOSEN = "real 3 + financial 8, global+blocks, VAR(2)"  # the validation table's winner
STUDENT_DESIGNS = (
    StudentDesign(()),
    StudentDesign((32, 16)),
    StudentDesign((32, 16), ended_prob=0.5),
    StudentDesign((64, 32), sims=80, ended_prob=0.5),
    StudentDesign((64, 32), sims=80),
    StudentDesign((64, 32), sims=80, ended_prob=0.25),
    StudentDesign((64, 32), sims=120),
)


def _with(info: InfoSet, after: InfoSet, cells: list[tuple[int, int]]) -> InfoSet:
    monthly = info.monthly.copy()
    for row, col in cells:
        monthly[row, col] = after.monthly[row, col]
    return InfoSet(info.quarter, after.cut, monthly, after.gdp)


def _attributions(
    panel: MacroPanel, teacher: DfmTeacher, before: InfoSet, after: InfoSet
) -> tuple[np.ndarray, np.ndarray, float]:
    """Sequential (panel order) and Shapley impacts of the cells new in `after`, and the
    revision they must sum to."""
    cells = list(
        zip(*np.nonzero(np.isfinite(after.monthly) & ~np.isfinite(before.monthly)), strict=False)
    )
    value = {
        subset_: teacher.nowcast(panel, _with(before, after, [cells[i] for i in subset_]))
        for n in range(len(cells) + 1)
        for subset_ in itertools.combinations(range(len(cells)), n)
    }
    seq = np.array([value[tuple(range(i + 1))] - value[tuple(range(i))] for i in range(len(cells))])
    shapley = np.zeros(len(cells))
    k = len(cells)
    for subset_, v in value.items():
        for i in range(k):
            if i not in subset_:
                weight = math.factorial(len(subset_)) * math.factorial(k - len(subset_) - 1)
                shapley[i] += weight / math.factorial(k) * (value[tuple(sorted((*subset_, i)))] - v)
    return seq, shapley, value[tuple(range(k))] - value[()]


def sequential_vs_joint(split: Split, cand: Candidate) -> dict[str, float]:
    """On the teacher itself, for every batch of simultaneous releases in validation (the
    month-end market data: 7 series at 21:00): per-series impacts by sequential attribution
    (one series at a time in panel order) and by Shapley values (all orders averaged) against
    statsmodels' joint news. All sum to the revision; how far apart are the parts?"""
    panel = subset(split.panel, cand.series)
    teacher = DfmTeacher(cand.spec(), WQ).fit(panel, split.train_cut)
    seq_gap, shap_gap, sizes, sums = [], [], [], []
    for quarter in split.valid:
        cuts = release_vintages(panel, quarter)
        for before_cut, after_cut in itertools.pairwise(cuts):
            before, after = (panel.info_set(quarter, c, WQ) for c in (before_cut, after_cut))
            new = np.isfinite(after.monthly) & ~np.isfinite(before.monthly)
            if new.sum() < 2 or np.isfinite(after.gdp).sum() != np.isfinite(before.gdp).sum():
                continue
            news = teacher.news(panel, before, after)
            joint = {(r["series"], r["period"]): r["impact"] for r in news["releases"]}
            keys = [
                (panel.series[c], str(after.months[r]))
                for r, c in zip(*np.nonzero(new), strict=False)
            ]
            target = np.array([joint.get(key, 0.0) for key in keys])
            seq, shapley, revision = _attributions(panel, teacher, before, after)
            sums.append(max(abs(seq.sum() - revision), abs(shapley.sum() - revision)))
            seq_gap += list(np.abs(seq - target))
            shap_gap += list(np.abs(shapley - target))
            sizes += list(np.abs(target))
    return {
        "batches": len(sums),
        "max |sum of parts - revision|": max(sums),
        "mean |joint impact|": float(np.mean(sizes)),
        "sequential vs joint: mean, max |gap|": [float(np.mean(seq_gap)), float(np.max(seq_gap))],
        "Shapley vs joint: mean, max |gap|": [float(np.mean(shap_gap)), float(np.max(shap_gap))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", action="store_true", help="also score the test period (once)")
    parser.add_argument("--student", action="store_true", help="also the student-design study")
    parser.add_argument(
        "--students-only", action="store_true", help="only the student designs (chosen teacher)"
    )
    parser.add_argument("--first-design", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    split = load_split()
    if args.students_only:
        chosen = next(c for c in candidates() if c.label == CHOSEN)
        for design in STUDENT_DESIGNS[args.first_design :]:
            print(f"student {design}:", json.dumps(distil(split, chosen, design)), flush=True)
        return
    print(
        f"validation {split.valid[0]}..{split.valid[-1]}: RMSE m1 m2 m3 (fitted to {split.train_cut.date()})"
    )
    chosen = print_validation(validate(split))
    panel = subset(split.panel, chosen.series)
    teacher = DfmTeacher(chosen.spec(), WQ).fit(panel, split.train_cut)
    print(
        f"window filter vs full statsmodels run: max |diff| {check_window_filter(split, chosen, teacher):.2e}"
    )
    for quarter in (split.valid[-1], pd.Period("2001Q3", "Q")):
        print(json.dumps(check_news(split, chosen, teacher, quarter), default=str))
    if args.student:
        print(json.dumps(sequential_vs_joint(split, chosen)), flush=True)
        for design in STUDENT_DESIGNS:
            print(f"student {design}:", json.dumps(distil(split, chosen, design)), flush=True)
    if args.test:
        score_test(split, chosen)


if __name__ == "__main__":
    main()
