"""Which GDP student tracks its teacher out of the train range, and which band means what it
says? Chosen on validation (2001Q1-2003Q4) and train only, with the recipe's teacher
(models/gdp/us.toml, end-of-validation parameters) and distillation sets.

    cd /work/wt/<you> && export PYTHONPATH=$PWD OMP_NUM_THREADS=1
    nice -n 10 python -m scripts.gdp_student_study            # all designs (~2 min each)
    nice -n 10 python -m scripts.gdp_student_study --designs mlp-64-32 skip-64-32

For every student design: RMSE of student minus teacher on the validation calendar sets (as
they are and with industrial production hidden), on simulated validation sets and on
*stressed* validation sets (every indicator's deviations from its train mean scaled by its own
factor drawn in [2, 6]: beyond the 3x of the train sets, the kind of swing the diagnosis
blames), and the student / teacher RMSE against GDP per information month. Then, for each band
construction, its coverage of the validation quarters when calibrated on train errors only.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forecaster.data.macro import InfoSet, MacroPanel
from forecaster.recipe import load_recipe
from forecaster.tasks.gdp.pipeline import (
    DistillationSets,
    GdpData,
    distillation_sets,
    fit_distilled,
    hide_series,
    load_gdp_data,
    teacher_spec,
)
from forecaster.tasks.gdp.settings import GdpSection, gdp_section
from forecaster.tasks.gdp.student import (
    MONTHS,
    NowcastStudent,
    SimulationPolicy,
    predict_student,
    simulate_info_sets,
    stack_inputs,
)
from forecaster.tasks.gdp.teacher import DfmTeacher
from scripts.gdp_panel_study import RECIPE

logger = logging.getLogger(__name__)

STRESS = (2.0, 6.0)  # per-series scale of the deviations in the stressed validation sets
STRESS_COPIES = 3
DESIGNS: dict[str, dict[str, Any]] = {
    "mlp-64-32": {"kind": "mlp", "hidden": [64, 32]},
    "skip-64-32": {"kind": "skip", "hidden": [64, 32]},
    "gated-64-32": {"kind": "gated", "hidden": [64, 32]},
    "skip-64-32-clip3": {"kind": "skip", "hidden": [64, 32], "clip": 3.0},
    "skip-64-32-clip5": {"kind": "skip", "hidden": [64, 32], "clip": 5.0},
    "skip-32-16": {"kind": "skip", "hidden": [32, 16]},
    "gated-32": {"kind": "gated", "hidden": [32]},
    "gated-64-32-lr1e-3": {"kind": "gated", "hidden": [64, 32], "lr": 1e-3},
    "gated-64-32-lr3e-4": {"kind": "gated", "hidden": [64, 32], "lr": 3e-4},
    "gated-128-64-lr1e-3": {"kind": "gated", "hidden": [128, 64], "lr": 1e-3},
    "gated-64-32-lr1e-3-wd1e-2": {
        "kind": "gated",
        "hidden": [64, 32],
        "lr": 1e-3,
        "weight_decay": 1e-2,
    },
    "mlp-64-32-amp5": {"kind": "mlp", "hidden": [64, 32], "amplify_max": 5.0},
    "skip-64-32-amp5": {"kind": "skip", "hidden": [64, 32], "amplify_max": 5.0},
}
CACHE = Path("/tmp/gdp_student_study.pkl")


@dataclass(frozen=True)
class Scored:
    """One validation set family: the information sets and the teacher's nowcasts of them."""

    infos: list[InfoSet]
    teacher: np.ndarray


def stressed(infos: list[InfoSet], mean: np.ndarray, rng: np.random.Generator) -> list[InfoSet]:
    """Copies of `infos` with each indicator's deviations from `mean` scaled by its own factor
    in `STRESS` (sign kept): out of the range every train set covers."""
    out = []
    for info in infos:
        for _ in range(STRESS_COPIES):
            factor = rng.uniform(*STRESS, size=len(mean))
            out.append(replace(info, monthly=mean + (info.monthly - mean) * factor, month=None))
    return out


def _rmse(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def _by_month(actual: np.ndarray, predicted: np.ndarray, months: np.ndarray) -> list[float]:
    return [_rmse(actual[months == k] - predicted[months == k]) for k in MONTHS]


def score_design(
    student: NowcastStudent, panel: MacroPanel, families: dict[str, Scored]
) -> dict[str, Any]:
    """Distance to the teacher on every family; RMSE ratio to the teacher's against GDP per
    month on the calendar families."""
    out: dict[str, Any] = {}
    for name, fam in families.items():
        own = predict_student(student, stack_inputs(fam.infos))[:, 0]
        out[f"vs teacher: {name}"] = round(_rmse(own - fam.teacher), 3)
        if fam.infos[0].month is None:
            continue
        actual = np.array([panel.gdp[i.quarter] for i in fam.infos])
        months = np.array([i.month for i in fam.infos])
        ratio = np.divide(_by_month(actual, own, months), _by_month(actual, fam.teacher, months))
        out[f"student/teacher RMSE m1-m3: {name}"] = ratio.round(3).tolist()
    return out


def band_study(
    student: NowcastStudent, panel: MacroPanel, calib: list[InfoSet], check: list[InfoSet]
) -> dict[str, Any]:
    """Coverage of `check` (and mean width) for bands calibrated on `calib`'s errors: pooled,
    per month, and scaled (errors divided by 1 + c |nowcast - train mean| / train std before
    the quantiles, the band multiplied back: wider when the nowcast is far from normal)."""

    def errors(infos: list[InfoSet]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        actual = np.array([panel.gdp[i.quarter] for i in infos])
        own = predict_student(student, stack_inputs(infos))
        return actual - own[:, 0], np.array([i.month for i in infos]), own

    (e_cal, m_cal, _), (e_chk, m_chk, _) = errors(calib), errors(check)
    out: dict[str, Any] = {"calibration errors": len(e_cal), "checked errors": len(e_chk)}
    variants = [("pooled", None, 0.0), ("by_month", m_cal, 0.0)]
    variants += [(f"scaled c={c}", None, c) for c in (0.5, 1.0, 2.0)]
    for name, months, c in variants:
        # the graph's own band, calibrated on `calib` (the student's band is reset after)
        student.calibrate_band(e_cal, errors(calib)[2][:, 0], months, c)
        own = errors(check)[2]
        inside = (e_chk >= own[:, 1] - own[:, 0]) & (e_chk <= own[:, 2] - own[:, 0])
        out[name] = {
            "coverage m1-m3": [round(float(inside[m_chk == k].mean()), 3) for k in MONTHS],
            "coverage": round(float(inside.mean()), 3),
            "mean width": round(float(np.mean(own[:, 2] - own[:, 1])), 3),
        }
    return out


def _families(
    data: GdpData, section: GdpSection, teacher: DfmTeacher, valid: list[InfoSet]
) -> dict[str, Scored]:
    panel, wq = data.panel, section.window_quarters
    rng = np.random.default_rng(1)
    mean = np.nanmean(panel.monthly.loc[: data.train[-1].asfreq("M", "end")].to_numpy(), axis=0)
    sets = {
        "calendar": valid,
        "calendar without IP": hide_series(panel, valid, section.teacher.score_without),
        "simulated": simulate_info_sets(panel, data.valid, 10, wq, SimulationPolicy(), rng),
        "stressed": stressed(valid, mean, rng),
    }
    sets["stressed without IP"] = hide_series(
        panel, sets["stressed"], section.teacher.score_without
    )
    return {name: Scored(infos, teacher.nowcasts(panel, infos)) for name, infos in sets.items()}


def _material(
    data: GdpData, section: GdpSection, valid: list[InfoSet], seed: int, fresh: bool
) -> tuple[DfmTeacher, dict[str, Scored], dict[float, DistillationSets]]:
    """The frozen teacher, the scored families and the distillation sets per amplification
    (cached in `CACHE`: the teacher's EM fit is most of a run)."""
    if CACHE.exists() and not fresh:
        cached: tuple[DfmTeacher, dict[str, Scored], dict[float, DistillationSets]]
        cached = pickle.loads(CACHE.read_bytes())
        return cached
    spec = teacher_spec(section.teacher.candidates[0], section.teacher, data.panel.series)
    teacher = DfmTeacher(spec, section.window_quarters).fit(data.panel, data.valid_cut)
    families = _families(data, section, teacher, valid)
    amplified = {d.get("amplify_max", section.student.amplify_max) for d in DESIGNS.values()}
    sets = {}
    for amp in sorted(amplified):
        chosen = section.model_copy(
            update={"student": section.student.model_copy(update={"amplify_max": amp})}
        )
        rng = np.random.default_rng(seed)
        sets[amp] = distillation_sets(data, chosen, teacher, valid, rng)
    print(f"teacher {spec.label}; {len(sets[3.0].train)} train sets", flush=True)
    for name, fam in families.items():
        print(f"  {name}: {len(fam.infos)} sets, teacher std {np.std(fam.teacher):.2f}")
    CACHE.write_bytes(pickle.dumps((teacher, families, sets)))
    return teacher, families, sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", nargs="*", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--seed", type=int, default=None, help="the student's seed (recipe's)")
    parser.add_argument("--fresh", action="store_true", help=f"ignore the cache {CACHE}")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    recipe = load_recipe(RECIPE)
    section = gdp_section(recipe)
    data = load_gdp_data(recipe, section)
    panel, wq = data.panel, section.window_quarters
    valid = panel.calendar_info_sets(data.valid, wq)
    _, families, all_sets = _material(data, section, valid, recipe.seed, args.fresh)
    for name in args.designs:
        chosen = section.model_copy(
            update={"student": section.student.model_copy(update=DESIGNS[name])}
        )
        sets = all_sets[chosen.student.amplify_max]
        seed = recipe.seed if args.seed is None else args.seed
        student, fit = fit_distilled(data, chosen, sets, seed)
        row: dict[str, Any] = {
            "best epoch": fit.best_epoch,
            "seconds": fit.seconds,
            "linear path train RMSE": fit.linear_path_train_rmse_vs_teacher,
        }
        row |= score_design(student, panel, families)
        train_calendar = sets.train[: sets.calendar]
        row["band: train-calibrated, on validation"] = band_study(
            student, panel, train_calendar, valid
        )
        print(f"{name}:", json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
